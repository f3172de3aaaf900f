// Package config reads the backbone's deployment configuration from the
// environment (SPEC §2), validates it once at start-up and derives every
// Pub/Sub name from BACKBONE_ENV alone.
package config

import (
	"fmt"
	"strings"
)

// Env is a deployment environment. Its value is the suffix of every topic and
// subscription name, so it is never written anywhere else.
type Env string

// The two environments SPEC §2 allows.
const (
	Sandbox    Env = "sandbox"
	Production Env = "production"
)

// Envs lists every valid environment, in a stable order.
var Envs = []Env{Sandbox, Production}

// ParseEnv validates a BACKBONE_ENV value.
func ParseEnv(s string) (Env, error) {
	switch Env(s) {
	case Sandbox, Production:
		return Env(s), nil
	case "":
		return "", fmt.Errorf("BACKBONE_ENV is not set: set it to one of %s", envList())
	}
	return "", fmt.Errorf("BACKBONE_ENV=%q is not valid: accepted values are %s", s, envList())
}

func envList() string {
	names := make([]string, len(Envs))
	for i, e := range Envs {
		names[i] = string(e)
	}
	return strings.Join(names, ", ")
}

// Topic kinds. A topic's full name is "events.{kind}.{env}".
const (
	KindRaw    = "raw"
	KindMerged = "merged"
	KindError  = "error"
	KindDLQ    = "dlq"
)

// Function targets, as registered with the Functions Framework (SPEC §1).
const (
	TargetMerge      = "Merge"
	TargetNetSuite   = "NetSuiteSink"
	TargetSuiteX     = "SuiteXSink"
	TargetRetry      = "Retry"
	TargetDLQArchive = "DLQArchive"
)

// Targets lists the five function targets in pipeline order.
var Targets = []string{TargetMerge, TargetNetSuite, TargetSuiteX, TargetRetry, TargetDLQArchive}

// Names are the Pub/Sub names of one environment.
type Names struct {
	RawTopic, MergedTopic, ErrorTopic, DLQTopic        string
	MergeSub, NetSuiteSub, SuiteXSub, RetrySub, DLQSub string
}

// Names derives every topic and subscription name of e.
func (e Env) Names() Names {
	t := func(kind string) string { return "events." + kind + "." + string(e) }
	return Names{
		RawTopic:    t(KindRaw),
		MergedTopic: t(KindMerged),
		ErrorTopic:  t(KindError),
		DLQTopic:    t(KindDLQ),
		MergeSub:    t(KindRaw) + "-merge-sub",
		NetSuiteSub: t(KindMerged) + "-netsuite-sub",
		SuiteXSub:   t(KindMerged) + "-suitex-sub",
		RetrySub:    t(KindError) + "-retry-sub",
		DLQSub:      t(KindDLQ) + "-sub",
	}
}

// Topics returns the four topic names of e.
func (n Names) Topics() []string {
	return []string{n.RawTopic, n.MergedTopic, n.ErrorTopic, n.DLQTopic}
}

// Subscription is one subscription of the topology: its name, the topic it
// reads and the function it triggers.
type Subscription struct {
	Name, Topic, Target string
}

// Subscriptions returns the five subscriptions of the environment.
func (n Names) Subscriptions() []Subscription {
	return []Subscription{
		{n.MergeSub, n.RawTopic, TargetMerge},
		{n.NetSuiteSub, n.MergedTopic, TargetNetSuite},
		{n.SuiteXSub, n.MergedTopic, TargetSuiteX},
		{n.RetrySub, n.ErrorTopic, TargetRetry},
		{n.DLQSub, n.DLQTopic, TargetDLQArchive},
	}
}

// OwnsTopic reports whether topic (a short name or a full
// "projects/P/topics/NAME" path) is one of e's four topics.
func (e Env) OwnsTopic(topic string) bool {
	if i := strings.LastIndex(topic, "/topics/"); i >= 0 {
		topic = topic[i+len("/topics/"):]
	}
	for _, t := range e.Names().Topics() {
		if t == topic {
			return true
		}
	}
	return false
}
