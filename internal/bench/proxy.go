package bench

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"sync"
)

// Proxy is a TCP proxy in front of a MySQL/MariaDB server that counts what
// its clients send, read off the wire protocol: every command packet (the
// first packet of a command carries sequence number 0), classified by its
// SQL keyword, and the durable commits (a COMMIT after a write, or a write
// outside a transaction: each is one redo-log flush the server must make).
//
// Counting at the wire sees every statement of every layer — the store, the
// driver's own SET TRANSACTION / START TRANSACTION, the sinks, the Retry
// function — without touching their code or the server's global counters,
// which other clients of a shared server would pollute. The proxy adds a
// hop, so the bench counts in a separate pass and never times through it.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	counts Counts
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Counts are the proxy's totals.
type Counts struct {
	// Statements counts commands that execute something (queries and
	// prepared-statement executions; not pings, quits or statement closes).
	Statements int64            `json:"statements"`
	ByKind     map[string]int64 `json:"by_kind"`
	// Commits counts durable commits: COMMIT of a transaction that wrote,
	// plus INSERT / UPDATE / DELETE / REPLACE run outside a transaction.
	Commits int64 `json:"durable_commits"`
	// Opaque counts connections that switched to TLS: their commands could
	// not be read (the bench's own DSNs never ask for TLS).
	Opaque int64 `json:"opaque_connections"`
}

// Sub returns c − o.
func (c Counts) Sub(o Counts) Counts {
	d := Counts{Statements: c.Statements - o.Statements, Commits: c.Commits - o.Commits, Opaque: c.Opaque - o.Opaque, ByKind: map[string]int64{}}
	for k, v := range c.ByKind {
		if n := v - o.ByKind[k]; n != 0 {
			d.ByKind[k] = n
		}
	}
	return d
}

// Add returns c + o.
func (c Counts) Add(o Counts) Counts {
	s := Counts{Statements: c.Statements + o.Statements, Commits: c.Commits + o.Commits, Opaque: c.Opaque + o.Opaque, ByKind: map[string]int64{}}
	for _, m := range []map[string]int64{c.ByKind, o.ByKind} {
		for k, v := range m {
			s.ByKind[k] += v
		}
	}
	return s
}

// viaProxy starts a counting proxy to the run's server and returns it with
// dsn pointed at it; the caller closes the proxy.
func (b *benchmark) viaProxy(dsn string) (*Proxy, string, error) {
	proxy, err := StartProxy(b.scratch.Addr())
	if err != nil {
		return nil, "", err
	}
	pdsn, err := WithAddr(dsn, proxy.Addr())
	if err != nil {
		proxy.Close()
		return nil, "", err
	}
	return proxy, pdsn, nil
}

// StartProxy listens on a free loopback port and forwards to target
// (host:port of the server).
func StartProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("counting proxy: listen: %w", err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, counts: Counts{ByKind: map[string]int64{}}}
	p.wg.Go(p.accept)
	return p, nil
}

// Addr is where clients connect instead of the server.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Counts returns a copy of the totals so far.
func (p *Proxy) Counts() Counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.counts
	c.ByKind = maps.Clone(p.counts.ByKind)
	return c
}

// Close stops accepting, cuts every connection and waits for the pipes.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
		_ = c.Close()
	}
}

func (p *Proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		if !p.track(client, server) {
			_ = client.Close()
			_ = server.Close()
			return
		}
		p.wg.Go(func() {
			var inner sync.WaitGroup
			inner.Go(func() {
				_, _ = io.Copy(client, server)
				p.untrack(client, server)
			})
			p.pipeClient(client, server)
			p.untrack(client, server)
			inner.Wait()
		})
	}
}

// MySQL command bytes (the first byte of a command packet).
const (
	comQuit       = 0x01
	comInitDB     = 0x02
	comQuery      = 0x03
	comPing       = 0x0e
	comStmtPrep   = 0x16
	comStmtExec   = 0x17
	comStmtClose  = 0x19
	comResetConn  = 0x1f
	sslRequestLen = 32 // the SSL request packet: capabilities, max packet, charset, filler
)

// session is the transaction state of one client connection.
type session struct {
	inTx, wrote, opaque bool
}

// pipeClient forwards client → server packet by packet, counting commands.
func (p *Proxy) pipeClient(client, server net.Conn) {
	var (
		s   session
		buf []byte
		hdr [4]byte
	)
	for {
		if _, err := io.ReadFull(client, hdr[:]); err != nil {
			return
		}
		n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
		seq := hdr[3]
		if cap(buf) < 4+n {
			buf = make([]byte, 4+n)
		}
		buf = buf[:4+n]
		copy(buf, hdr[:])
		if _, err := io.ReadFull(client, buf[4:]); err != nil {
			return
		}
		switch {
		case s.opaque:
		case seq == 1 && n == sslRequestLen:
			// The client asked for TLS: from here on the bytes are
			// encrypted and cannot be counted.
			s.opaque = true
			p.mu.Lock()
			p.counts.Opaque++
			p.mu.Unlock()
		case seq == 0 && n > 0:
			p.count(&s, buf[4:])
		}
		if _, err := server.Write(buf); err != nil {
			return
		}
	}
}

func (p *Proxy) count(s *session, payload []byte) {
	kind, stmt := "", true
	switch payload[0] {
	case comQuery:
		kind = classify(payload[1:])
	case comStmtExec:
		kind = "EXECUTE (prepared)"
	case comStmtPrep:
		kind = "PREPARE"
	case comInitDB:
		kind = "USE"
	case comResetConn:
		kind = "RESET CONNECTION"
	case comPing:
		kind, stmt = "PING", false
	case comQuit, comStmtClose:
		return
	default:
		kind = fmt.Sprintf("COMMAND 0x%02x", payload[0])
	}
	commit := false
	switch kind {
	case "START TRANSACTION", "BEGIN":
		s.inTx, s.wrote = true, false
	case "COMMIT":
		commit = s.inTx && s.wrote
		s.inTx, s.wrote = false, false
	case "ROLLBACK":
		s.inTx, s.wrote = false, false
	case "INSERT", "UPDATE", "DELETE", "REPLACE":
		if s.inTx {
			s.wrote = true
		} else {
			commit = true
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if stmt {
		p.counts.Statements++
	}
	p.counts.ByKind[kind]++
	if commit {
		p.counts.Commits++
	}
}

// classify names a SQL statement by its leading keyword(s).
func classify(q []byte) string {
	q = skipSpaceAndComments(q)
	end := bytes.IndexFunc(q, func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '(' || r == ';' })
	if end < 0 {
		end = len(q)
	}
	word := string(bytes.ToUpper(q[:end]))
	rest := bytes.ToUpper(q[end:])
	switch word {
	case "SELECT":
		if bytes.Contains(rest, []byte("FOR UPDATE")) {
			return "SELECT … FOR UPDATE"
		}
	case "SET":
		if bytes.HasPrefix(bytes.TrimSpace(rest), []byte("TRANSACTION")) {
			return "SET TRANSACTION"
		}
	case "START":
		return "START TRANSACTION"
	case "":
		return "(empty)"
	}
	return word
}

func skipSpaceAndComments(q []byte) []byte {
	for {
		q = bytes.TrimLeft(q, " \t\r\n")
		if !bytes.HasPrefix(q, []byte("/*")) {
			return q
		}
		end := bytes.Index(q, []byte("*/"))
		if end < 0 {
			return nil
		}
		q = q[end+2:]
	}
}

// errProxyOpaque is returned when a counted pass cannot be trusted.
var errProxyOpaque = errors.New("a connection switched to TLS: its statements could not be counted (use a DSN without tls)")

// Statements is a counted pass: what one event costs the database.
type Statements struct {
	Events int `json:"events"`
	// PerEvent is statements per event; ByKind splits it by statement.
	PerEvent        float64            `json:"per_event"`
	ByKind          map[string]float64 `json:"by_kind_per_event"`
	CommitsPerEvent float64            `json:"durable_commits_per_event"`
}

// PerEvent divides a counted delta by the events it served.
func PerEvent(d Counts, events int) (Statements, error) {
	if d.Opaque > 0 {
		return Statements{}, errProxyOpaque
	}
	if events <= 0 {
		return Statements{}, errors.New("no events in the counted pass")
	}
	s := Statements{Events: events, ByKind: map[string]float64{}}
	n := float64(events)
	s.PerEvent = round3(float64(d.Statements) / n)
	s.CommitsPerEvent = round3(float64(d.Commits) / n)
	for k, v := range d.ByKind {
		s.ByKind[k] = round3(float64(v) / n)
	}
	return s, nil
}
