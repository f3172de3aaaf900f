#!/usr/bin/env bash
# The README's walkthrough: what a newcomer runs in a second shell while
# `backbone dev` runs, after pasting the two `export` lines of its banner.
# Each step checks the outcome the README states, so the README cannot
# drift from what the backbone does: cmd/backbone's TestWalkthrough runs this
# script against a dev stack on free ports. The pipeline is asynchronous, so
# an expected outcome is polled for (up to 30 s) rather than read once.
#
#   scripts/walkthrough.sh            # uses bin/backbone (make build)
#   BACKBONE=/path/to/backbone scripts/walkthrough.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bb=${BACKBONE:-bin/backbone}
: "${PUBSUB_EMULATOR_HOST:?paste the export lines that backbone dev prints first}"
: "${WORKER_DSN:?paste the export lines that backbone dev prints first}"

# expect_lines N PATTERN CMD...: like expect, for at least N lines that
# match PATTERN.
expect_lines() {
	local n=$1 pattern=$2 out=""
	shift 2
	for _ in $(seq 1 150); do
		if out=$("$@" 2>&1) && [ "$(grep -cE -- "$pattern" <<<"$out")" -ge "$n" ]; then
			echo "\$ backbone ${*:2}"
			echo "$out"
			return 0
		fi
		sleep 0.2
	done
	echo "walkthrough: 'backbone ${*:2}' never showed $n lines like /$pattern/; it last printed:" >&2
	echo "$out" >&2
	exit 1
}

# run prints a command, then runs it.
run() {
	echo "\$ backbone ${*:2}"
	"$@"
}

# expect PATTERN CMD...: run CMD until its output matches the extended
# regular expression PATTERN, then print that output.
expect() {
	local pattern=$1 out=""
	shift
	for _ in $(seq 1 150); do
		if out=$("$@" 2>&1) && grep -qE -- "$pattern" <<<"$out"; then
			echo "\$ backbone ${*:2}"
			echo "$out"
			return 0
		fi
		sleep 0.2
	done
	echo "walkthrough: 'backbone ${*:2}' never showed /$pattern/; it last printed:" >&2
	echo "$out" >&2
	exit 1
}

# 1. A customer from NetSuite: stored as version 1, delivered to SuiteX.
run "$bb" publish examples/customer-create.json
expect 'suitex +delivered +v1' "$bb" trace customer:C-1001

# 2. SuiteX updates it at base version 1: version 2, delivered to NetSuite.
run "$bb" publish examples/customer-update.json
expect 'netsuite +delivered +v2' "$bb" trace customer:C-1001

# 3. Two sales orders, one edited by both systems in turn.
run "$bb" publish examples/sales-orders.jsonl
expect 'version 2' "$bb" trace sales_order:SO-2026-0001

# 4. A concurrent edit: resolved, the record's history shows `merged`.
run "$bb" publish examples/concurrent-edit.jsonl
expect 'merge +merged +v3' "$bb" trace customer:C-2002

# 5. An echo: NetSuite sets an email; once SuiteX has been sent it, SuiteX
# re-emitting the same value is an `echo`, and nothing is stored.
run "$bb" publish examples/echo-1.json
expect 'suitex +delivered +v1' "$bb" trace customer:C-3003
run "$bb" publish examples/echo-2.json
expect 'merge +echo' "$bb" trace customer:C-3003

# 6. Repeats: the same event twice, then re-sent without an id.
run "$bb" publish examples/duplicate.jsonl
expect_lines 2 'merge +duplicate' "$bb" trace customer:C-4004

# 7. Poison: each of the 7 lines rejected with a stable reason, and in the
# dead letters.
run "$bb" publish --verbatim examples/poison.jsonl
expect_lines 7 '  merge  ' "$bb" dlq list --stage merge
expect 'invalid_json' "$bb" dlq list --stage merge

# 8. The verification run, as the functions' least-privilege user.
run "$bb" stress --dsn "$WORKER_DSN" --n 200

echo "walkthrough: every step gave the outcome the README states"
