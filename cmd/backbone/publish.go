package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/publish"
)

func runPublish(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "publish", "[--verbatim] FILE|-\n\nPublishes raw events to events.raw.{BACKBONE_ENV}: FILE holds one JSON object, a JSON array of\nobjects, or JSON lines. Prints one message id per event. Uses PUBSUB_EMULATOR_HOST when set.")
	verbatim := fs.Bool("verbatim", false, "publish each line as is, even when it is not valid JSON (to test poison messages)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one FILE (or - for standard input)")
	}
	cfg, err := config.Load(c.getenv)
	if err != nil {
		return err
	}
	var in io.Reader = os.Stdin
	if name := fs.Arg(0); name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	data, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	msgs, err := splitEvents(data, *verbatim)
	if err != nil {
		return err
	}
	ps, err := publish.NewPubSub(ctx, projectOrDefault(cfg), cfg.EmulatorHost)
	if err != nil {
		return err
	}
	defer ps.Close()
	pub := publish.Guard(cfg.Env, ps)
	topic := cfg.Env.Names().RawTopic
	for i, m := range msgs {
		id, err := pub.Publish(ctx, topic, m)
		if err != nil {
			return fmt.Errorf("event %d: %w (%d of %d published)", i+1, err, i, len(msgs))
		}
		fmt.Fprintln(c.stdout, id)
	}
	return nil
}

// projectOrDefault lets local runs against the emulator work without a
// project: the emulator accepts any.
func projectOrDefault(cfg config.Config) string {
	if cfg.Project == "" && cfg.EmulatorHost != "" {
		return "backbone-dev"
	}
	return cfg.Project
}

// splitEvents turns a JSON object, a JSON array or JSON lines into messages,
// each with the ordering key of its record when it names one. Everything is
// checked before anything is published.
func splitEvents(data []byte, verbatim bool) ([]publish.Message, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, errors.New("no events in the input")
	}
	var items [][]byte
	if trimmed[0] == '[' && !verbatim {
		var arr []json.RawMessage
		if err := json.Unmarshal(trimmed, &arr); err != nil {
			return nil, fmt.Errorf("input is not valid JSON (an array was expected): %w", err)
		}
		for _, a := range arr {
			items = append(items, a)
		}
	} else if json.Valid(trimmed) && !verbatim {
		items = [][]byte{trimmed}
	} else {
		sc := bufio.NewScanner(bytes.NewReader(trimmed))
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		line := 0
		for sc.Scan() {
			line++
			l := bytes.TrimSpace(sc.Bytes())
			if len(l) == 0 {
				continue
			}
			if !verbatim && !json.Valid(l) {
				return nil, fmt.Errorf("line %d is not valid JSON (use --verbatim to publish it anyway)", line)
			}
			items = append(items, append([]byte(nil), l...))
		}
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	msgs := make([]publish.Message, 0, len(items))
	for _, it := range items {
		var compact bytes.Buffer
		if json.Compact(&compact, it) == nil {
			it = compact.Bytes()
		}
		var key struct {
			RecordType string `json:"record_type"`
			RecordID   string `json:"record_id"`
		}
		m := publish.Message{Data: it}
		if json.Unmarshal(it, &key) == nil && key.RecordType != "" && key.RecordID != "" {
			m.OrderingKey = publish.OrderingKey(key.RecordType, key.RecordID)
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}
