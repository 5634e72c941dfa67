#!/usr/bin/env bash
# scripts/bench-ab.sh REV_A REV_B [RUNS]: compares two builds of the daemon on the quick pgbench
# runs (ENFORCER_BENCH_QUICK: pgbouncer, allow-all and rec only, interleaved round by round),
# alternating whole runs in the order A B, B A, A B, B A… REV is a git revision, or "." for the
# working tree. Use an even RUNS: each build then runs first in as many pairs as the other.
#
# Why the order turns: the second run of a pair has read better than the first, whatever the
# builds. At 8 clients with the extended protocol, in four sets of three A-then-B pairs on
# 2026-11-28 (two of them one build against itself), rec only/allow-all was higher in the B run of
# 11 of the 12 pairs, by 0.05 on average; with the simple protocol it was not.
#
# Why whole runs, alternated: on this 2-core machine two runs of one build differ by more than a
# recording change moves the ratios. Two 12-round runs of the same daemon gave rec only/allow-all
# 0.888 and 0.981 at 8 clients, so one run per build cannot tell them apart at a few percent;
# several alternated runs can. Root, like every benchmark here.
#
# Why short rounds, many of them: most of the spread is from one pgbench run to the next, not
# within a run (one configuration ran at 11k and 15k TPS in consecutive rounds). Per-round rec
# only/allow-all ratios spread nearly as much in 1- and 2-s rounds as in 5-s ones (a standard
# deviation of 0.10–0.11 against 0.085), so 2-s rounds buy about twice as many rounds, and a
# narrower interval, in the same time.
#
# ENFORCER_BENCH_QUICK_MODE, ENFORCER_BENCH_QUICK_CLIENTS, ENFORCER_BENCH_ROUNDS (default 16 here)
# and ENFORCER_BENCH_SECONDS apply as in the quick run. Prints, per run and then
# per build, the geometric means of the per-round ratios and of each path's own CPU per
# transaction, and per build the 95 % interval of the ratios, and of B / A, over its runs (not its
# rounds: runs differ by more than their rounds do, so an interval over the pooled rounds is too
# narrow; on 2026-11-28 it put allow-all/pgbouncer at B/A 1.039 [1.004, 1.076] where A and B had
# the same pass-through code).
# ENFORCER_BENCH_AB_KEEP=DIR keeps every run's rows there (run-A-1.txt…).
set -euo pipefail
usage="usage: scripts/bench-ab.sh REV_A REV_B [RUNS]"
rev_a=${1:?$usage} rev_b=${2:?$usage} runs=${3:-4}
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
[ "$(id -u)" = 0 ] || exec sudo -E "$0" "$@"
export ENFORCER_BENCH_QUICK=1 ENFORCER_BENCH_ROUNDS=${ENFORCER_BENCH_ROUNDS:-16}

work=$(mktemp -d)
trap 'git worktree remove --force "$work/src" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
build() { # REV OUT
	if [ "$1" = . ]; then
		go build -o "$2" ./cmd/enforcer
		return
	fi
	git worktree add --detach "$work/src" "$1" >/dev/null
	(cd "$work/src" && go build -o "$2" ./cmd/enforcer)
	git worktree remove --force "$work/src"
}
[ -z "${ENFORCER_BENCH_AB_KEEP:-}" ] || mkdir -p "$ENFORCER_BENCH_AB_KEEP"
build "$rev_a" "$work/enforcer-A"
build "$rev_b" "$work/enforcer-B"
go test -c -o "$work/bench.test" ./cmd/enforcer

# ratios FILE SIDE: one line per client count: side, clients, rounds and the mean logs of the
# per-round ratios allow-all/pgbouncer TPS, allow-all/pgbouncer CPU, rec only/allow-all TPS, then
# of each path's own CPU per 1,000 transactions (pgbouncer, allow-all, rec only). The absolute
# figures tell a change in the daemon from one in pgbouncer's rounds, which moves the CPU ratio too.
ratios() {
	awk -v side="$2" '
	/^pgbouncer /      { cl = $3; pt = $4; pc = $5 }
	/^enf: allow-all / { at = $5; ac = $6 }
	/^enf: rec only /  { n[cl]++; s1[cl] += log(at / pt); s2[cl] += log(ac / pc); s3[cl] += log($6 / at)
	                     c1[cl] += log(pc); c2[cl] += log(ac); c3[cl] += log($7) }
	END { for (c in n) printf "%s %s %d %.5f %.5f %.5f %.5f %.5f %.5f\n", side, c, n[c], s1[c] / n[c], s2[c] / n[c], s3[c] / n[c], c1[c] / n[c], c2[c] / n[c], c3[c] / n[c] }' "$1"
}
show() { awk '{ printf "%-4s %2s clients, %2d rounds: allow-all/pgbouncer TPS %.3f CPU %.3f · rec only/allow-all TPS %.3f · CPU s/1k tx: pgbouncer %.4f, allow-all %.4f, rec only %.4f\n", $1, $2, $3, exp($4), exp($5), exp($6), exp($7), exp($8), exp($9) }'; }

cd cmd/enforcer
for i in $(seq 1 "$runs"); do
	order="A B"
	[ $((i % 2)) = 1 ] || order="B A"
	for side in $order; do
		out="$work/run-$side-$i.txt"
		ENFORCER_BENCH_DAEMON_BIN="$work/enforcer-$side" "$work/bench.test" -test.run '^$' -test.bench Postgres -test.benchtime 1x -test.timeout 60m >"$out" 2>&1 ||
			{ cat "$out"; exit 1; }
		[ -z "${ENFORCER_BENCH_AB_KEEP:-}" ] || cp "$out" "$ENFORCER_BENCH_AB_KEEP/"
		ratios "$out" "$side" | tee -a "$work/all" | show | sed "s/^/run $i /"
	done
done
echo "### per build, geometric mean over $runs runs (A = $rev_a, B = $rev_b)"
awk '{ k = $1 " " $2; n[k]++; r[k] += $3; for (i = 4; i <= 9; i++) s[k, i] += $i }
	END { for (k in n) { printf "%s %d", k, r[k]; for (i = 4; i <= 9; i++) printf " %.5f", s[k, i] / n[k]; print "" } }' "$work/all" | sort | show
echo "### per build, geometric mean over its runs [95 % interval over runs]; B / A is the ratio of the two"
awk 'function t95(df) { return df >= 120 ? 1.98 : df >= 60 ? 2.00 : df >= 30 ? 2.05 : df >= 20 ? 2.09 : df >= 10 ? 2.23 : df >= 5 ? 2.57 : df >= 2 ? 4.30 : 12.71 } # never below the true quantile
	{ k = $2; n[$1, k]++; cl[k] = 1; for (i = 4; i <= 6; i++) { s[$1, k, i] += $i; ss[$1, k, i] += $i * $i } }
	END {
		split("allow-all/pgbouncer TPS,allow-all/pgbouncer CPU,rec only/allow-all TPS", name, ",")
		for (k in cl) for (i = 4; i <= 6; i++) {
			line = sprintf("%2s clients, %-24s", k, name[i - 3])
			for (side = 1; side <= 2; side++) {
				x = side == 1 ? "A" : "B"; m[x] = s[x, k, i] / n[x, k]
				v[x] = n[x, k] > 1 ? (ss[x, k, i] - n[x, k] * m[x] ^ 2) / (n[x, k] - 1) / n[x, k] : 0
				h = t95(n[x, k] - 1) * sqrt(v[x])
				line = line sprintf("  %s %.3f [%.3f, %.3f]", x, exp(m[x]), exp(m[x] - h), exp(m[x] + h))
			}
			h = t95(n["A", k] + n["B", k] - 2) * sqrt(v["A"] + v["B"])
			printf "%s  B/A %.3f [%.3f, %.3f]\n", line, exp(m["B"] - m["A"]), exp(m["B"] - m["A"] - h), exp(m["B"] - m["A"] + h)
		}
	}' "$work/all" | sort
