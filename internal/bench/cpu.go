package bench

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CPU is where the processor time of a measurement window went. The
// machine's cores are shared by this process, the database server and
// whatever else runs; splitting them shows both the cost per event and how
// much of the machine a window really had.
type CPU struct {
	// SelfMSPerEvent is this process's CPU (user + system) per event: the
	// backbone's Go code, the in-process Pub/Sub emulator and the load
	// generator itself.
	SelfMSPerEvent float64 `json:"self_ms_per_event"`
	// ServerMSPerEvent is the whole database server process's CPU per
	// event (0 when the server is not a local process this user can see).
	// On a shared server it includes other clients' work.
	ServerMSPerEvent float64 `json:"server_ms_per_event"`
	// OwnServerMSPerEvent is the CPU of the server threads serving this
	// run's own connections (MariaDB's PROCESSLIST.TID), per event: the
	// part of the server's work that is certainly ours. It leaves out the
	// server's background threads (page cleaner, purge), so it is a floor.
	OwnServerMSPerEvent float64 `json:"own_server_ms_per_event"`
	// Cores busy on average during the window.
	SelfCores   float64 `json:"self_cores"`
	ServerCores float64 `json:"server_cores"`
	// OtherCores is the rest of the machine's busy time: other processes
	// sharing the machine (and the kernel's work for them).
	OtherCores float64 `json:"other_cores"`
	// MachineCores is the number of cores (runtime view of /proc/stat).
	MachineCores int `json:"machine_cores"`
}

// cpuMeter takes CPU snapshots of this process, the database server process
// (pid 0: none) and the whole machine.
type cpuMeter struct {
	serverPID int
	cores     int
	// threads lists the server threads of this run's connections:
	// connection id -> OS thread id (nil: not available).
	threads func() map[int64]int
}

type cpuSnap struct {
	at           time.Time
	self, server time.Duration
	busy, total  uint64 // jiffies of the whole machine
	// own: CPU of each of our connections' server threads, by connection.
	own map[int64]threadCPU
}

type threadCPU struct {
	tid int
	cpu time.Duration
}

// clockTick is USER_HZ, the unit of /proc times; 100 on every Linux
// architecture Go supports.
const clockTick = 100

func newCPUMeter(serverPID int) *cpuMeter {
	return &cpuMeter{serverPID: serverPID, cores: countCores()}
}

func (m *cpuMeter) snap() cpuSnap {
	s := cpuSnap{at: time.Now()}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if m.serverPID > 0 {
		s.server = processCPU(m.serverPID)
		if m.threads != nil {
			s.own = map[int64]threadCPU{}
			for conn, tid := range m.threads() {
				s.own[conn] = threadCPU{tid: tid, cpu: threadCPUTime(m.serverPID, tid)}
			}
		}
	}
	s.busy, s.total = machineJiffies()
	return s
}

// ownServer sums the CPU of the connections present in both snapshots on
// the same thread. A connection opened inside the window is left out: its
// thread may come from the server's thread cache with another
// connection's time on it (the warm-up opens the pools' connections).
func ownServer(a, b cpuSnap) time.Duration {
	var d time.Duration
	for conn, tb := range b.own {
		if ta, ok := a.own[conn]; ok && ta.tid == tb.tid && tb.cpu >= ta.cpu {
			d += tb.cpu - ta.cpu
		}
	}
	return d
}

// between returns the CPU split of the window a→b over events events.
func (m *cpuMeter) between(a, b cpuSnap, events int) CPU {
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		return CPU{}
	}
	c := CPU{MachineCores: m.cores}
	self, server := (b.self - a.self).Seconds(), (b.server - a.server).Seconds()
	c.SelfCores, c.ServerCores = round3(self/wall), round3(server/wall)
	if dt := b.total - a.total; dt > 0 && m.cores > 0 {
		busyCores := float64(b.busy-a.busy) / float64(dt) * float64(m.cores)
		c.OtherCores = round3(max(0, busyCores-self/wall-server/wall))
	}
	if events > 0 {
		c.SelfMSPerEvent = round3(self * 1000 / float64(events))
		c.ServerMSPerEvent = round3(server * 1000 / float64(events))
		c.OwnServerMSPerEvent = round3(ownServer(a, b).Seconds() * 1000 / float64(events))
	}
	return c
}

// processCPU reads utime + stime of pid from /proc/PID/stat.
func processCPU(pid int) time.Duration {
	return statCPU(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
}

// threadCPUTime reads utime + stime of one thread of pid.
func threadCPUTime(pid, tid int) time.Duration {
	return statCPU(filepath.Join("/proc", strconv.Itoa(pid), "task", strconv.Itoa(tid), "stat"))
}

func statCPU(path string) time.Duration {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	// The command name (field 2) may contain spaces: fields count from the
	// last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTick
}

// machineJiffies reads the aggregate line of /proc/stat: busy and total.
func machineJiffies() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	var idle uint64
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i >= 8 { // guest time is already counted in user
			break
		}
		total += n
		if i == 3 || i == 4 { // idle, iowait
			idle += n
		}
	}
	return total - idle, total
}

func countCores() int {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "cpu") && len(l) > 3 && l[3] >= '0' && l[3] <= '9' {
			n++
		}
	}
	return n
}

// FindServerPID returns the pid of a local MariaDB/MySQL server process, or
// 0 when there is none visible (a remote server: its CPU is not measured).
func FindServerPID() int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue
		}
		switch strings.TrimSpace(string(comm)) {
		case "mariadbd", "mysqld":
			return pid
		}
	}
	return 0
}
