package mask

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user+system CPU time. The build box is shared, so wall-clock ns/op
// swings with other load; CPU time per op (reported as cpu-MB/s) is the steadier number.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loop runs f b.N times and reports CPU-time throughput next to the wall-clock one.
func loop(b *testing.B, bytesPerOp int, f func()) {
	b.SetBytes(int64(bytesPerOp))
	b.ReportAllocs()
	start := cpuTime()
	n := 0
	for b.Loop() {
		f()
		n++
	}
	if cpu := cpuTime() - start; cpu > 0 && n > 0 {
		b.ReportMetric(float64(bytesPerOp)*float64(n)/cpu.Seconds()/1e6, "cpu-MB/s")
	}
}

// Benchmarks: MB/s and allocs/op for clean text, sparse PII (one finding per KiB) and dense PII
// (one finding per ~64 bytes) at 100 B, 4 KiB and 1 MiB; per-cell costs for DataRow-sized values;
// JSON and COPY rows. Baseline/copy is a plain append of the same bytes, for a ratio.
//
//	go test -run '^$' -bench . -benchmem ./internal/mask/

var benchSink int

var benchFindings = []string{
	"alice@example.com", "4111 1111 1111 1111", "DE89370400440532013000", "AKIAJX5VZ6QLM3RKT2YB",
	"postgres://app:s3cr3t@db/prod", "password=hunter2!x", "5555-5555-5555-4444", "bob.smith@example.org",
}

// piiText is clean text with a finding every `every` bytes.
func piiText(n, every int) string {
	clean := cleanText(n + every)
	var b strings.Builder
	i := 0
	for k := 0; b.Len() < n; k++ {
		step := every - 20
		if step < 8 {
			step = 8
		}
		end := min(i+step, len(clean))
		b.WriteString(clean[i:end])
		b.WriteString(" ")
		b.WriteString(benchFindings[k%len(benchFindings)])
		b.WriteString(" ")
		i = end
		if i >= len(clean) {
			i = 0
		}
	}
	return b.String()[:n]
}

var benchSizes = []struct {
	name string
	n    int
}{{"100B", 100}, {"4KB", 4 << 10}, {"1MB", 1 << 20}}

func BenchmarkMaskText(b *testing.B) {
	p := mustPlan(b, nil, Config{})
	for _, kind := range []string{"clean", "sparse", "dense"} {
		for _, sz := range benchSizes {
			var in []byte
			switch kind {
			case "clean":
				in = []byte(cleanText(sz.n))
			case "sparse":
				in = []byte(piiText(sz.n, 1024))
			case "dense":
				in = []byte(piiText(sz.n, 64))
			}
			b.Run(kind+"/"+sz.name, func(b *testing.B) {
				dst := make([]byte, 0, 2*len(in))
				loop(b, len(in), func() {
					if _, _, err := p.MaskText(in, dst[:0]); err != nil {
						b.Fatal(err)
					}
				})
			})
		}
	}
}

// BenchmarkMaskTextAdversarial: 1 MiB inputs built to make detectors back-track.
func BenchmarkMaskTextAdversarial(b *testing.B) {
	p := mustPlan(b, nil, Config{})
	for name, unit := range map[string]string{
		"at-signs":    "@",
		"assignments": "token=",
		"email-like":  "a.b.c.d.e@",
		"digits":      "4111 ",
		"colons":      "1:",
		"pem-begin":   "-----BEGIN PRIVATE KEY-----",
		"jwt-like":    "eyJhbGciOiJub25lIn0.",
		"uri-like":    "x://u:p@",
	} {
		in := []byte(strings.Repeat(unit, (1<<20)/len(unit)))
		b.Run(name, func(b *testing.B) {
			dst := make([]byte, 0, 4*len(in))
			loop(b, len(in), func() {
				if _, _, err := p.MaskText(in, dst[:0]); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

func BenchmarkBaseline(b *testing.B) {
	for _, sz := range benchSizes {
		in := []byte(cleanText(sz.n))
		// classify: one table lookup per byte, the floor for any byte-at-a-time scanner.
		b.Run("classify/"+sz.name, func(b *testing.B) {
			n := 0
			loop(b, len(in), func() {
				for _, c := range in {
					if class[c] != clNone {
						n++
					}
				}
			})
			benchSink = n
		})
		b.Run("copy/"+sz.name, func(b *testing.B) {
			dst := make([]byte, 0, len(in))
			loop(b, len(in), func() { dst = append(dst[:0], in...) })
		})
	}
}

// BenchmarkMaskRow masks one DataRow of typical cells: id, name, e-mail, status, note, created.
func BenchmarkMaskRow(b *testing.B) {
	p := mustPlan(b, []ColumnRule{{Pattern: "*.password_hash", Style: StyleRedact}}, Config{})
	rp := p.ForColumns([]Column{
		{Table: "customers", Name: "id", TypeOID: oidInt8},
		{Table: "customers", Name: "name", TypeOID: oidText},
		{Table: "customers", Name: "contact", TypeOID: oidText},
		{Table: "customers", Name: "status", TypeOID: oidVarchar},
		{Table: "customers", Name: "note", TypeOID: oidText},
		{Table: "customers", Name: "created_at", TypeOID: oidTimestamptz},
		{Table: "customers", Name: "password_hash", TypeOID: oidText},
	})
	rows := map[string][][]byte{
		// pgbench_accounts-like: three integers and a blank-padded char(84).
		"pgbench": {[]byte("4242"), []byte("1"), []byte("0"), []byte(strings.Repeat(" ", 84)), nil, nil, nil},
		"clean": {[]byte("1234567"), []byte("Ada Lovelace"), []byte("see account page"), []byte("active"),
			[]byte("prefers morning deliveries, order ORD-2024-000123"), []byte("2024-01-15 10:30:00+00"), nil},
		"dense": {[]byte("1234567"), []byte("Ada Lovelace"), []byte("ada@example.com"), []byte("active"),
			[]byte("card 4111 1111 1111 1111, iban DE89370400440532013000"), []byte("2024-01-15 10:30:00+00"),
			[]byte("$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW")},
	}
	for _, name := range []string{"pgbench", "clean", "dense"} {
		row := rows[name]
		size := 0
		for _, c := range row {
			size += len(c)
		}
		b.Run(name, func(b *testing.B) {
			dst := make([]byte, 0, 1024)
			loop(b, size, func() {
				for i, c := range row {
					if c == nil {
						continue
					}
					if _, _, _, err := rp.MaskCell(i, c, dst[:0]); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkMaskRowBinary masks one DataRow a driver asked for in binary (pgx does for the types
// it knows): int4, text, int8, numeric and timestamptz cells.
func BenchmarkMaskRowBinary(b *testing.B) {
	p := mustPlan(b, nil, Config{})
	rp := p.ForColumns([]Column{
		{Table: "orders", Name: "id", TypeOID: oidInt4, Format: 1},
		{Table: "orders", Name: "customer", TypeOID: oidText, Format: 1},
		{Table: "orders", Name: "quantity", TypeOID: oidInt8, Format: 1},
		{Table: "orders", Name: "total", TypeOID: oidNumeric, Format: 1},
		{Table: "orders", Name: "created_at", TypeOID: oidTimestamptz, Format: 1},
	})
	row := [][]byte{
		{0, 0, 0x10, 0x92},
		[]byte("Ada Lovelace"),
		{0, 0, 0, 0, 0, 0, 0, 12},
		// 1234.5: ndigits 2, weight 0, positive, dscale 1, digits 1234 5000.
		{0, 2, 0, 0, 0, 0, 0, 1, 0x04, 0xd2, 0x13, 0x88},
		{0, 2, 0xb5, 0x8c, 0x2f, 0x4c, 0x5e, 0x00},
	}
	size := 0
	for _, c := range row {
		size += len(c)
	}
	dst := make([]byte, 0, 1024)
	loop(b, size, func() {
		for i, c := range row {
			if _, _, _, err := rp.MaskCell(i, c, dst[:0]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkMaskJSON(b *testing.B) {
	p := mustPlan(b, nil, Config{})
	for _, kind := range []string{"clean", "dense"} {
		var sb strings.Builder
		sb.WriteString("[")
		for i := 0; sb.Len() < 4<<10; i++ {
			if i > 0 {
				sb.WriteString(",")
			}
			contact := "see account page"
			if kind == "dense" {
				contact = fmt.Sprintf("user%d@example.com", i)
			}
			fmt.Fprintf(&sb, `{"id": %d, "name": "Customer %d", "contact": %q, "tags": ["a", "b"], "balance": %d.25, "active": true}`, i, i, contact, i*7)
		}
		sb.WriteString("]")
		in := []byte(sb.String())
		b.Run(kind+"/4KB", func(b *testing.B) {
			dst := make([]byte, 0, 2*len(in))
			loop(b, len(in), func() {
				if _, _, err := p.MaskJSON(in, dst[:0]); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

func BenchmarkMaskCopyLine(b *testing.B) {
	p := mustPlan(b, nil, Config{})
	rp := p.ForColumns([]Column{{Table: "c", Name: "id", TypeOID: oidInt8}, {Table: "c", Name: "name", TypeOID: oidText},
		{Table: "c", Name: "contact", TypeOID: oidText}, {Table: "c", Name: "note", TypeOID: oidText}})
	for name, line := range map[string]string{
		"clean": "1234567\tAda Lovelace\tsee account page\tprefers\\tmorning deliveries\n",
		"dense": "1234567\tAda Lovelace\tada@example.com\tcard 4111 1111 1111 1111\\n\n",
	} {
		in := []byte(line)
		b.Run(name, func(b *testing.B) {
			dst := make([]byte, 0, 256)
			loop(b, len(in), func() {
				if _, _, err := p.MaskCopyLine(in, dst[:0], rp); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}
