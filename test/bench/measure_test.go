package bench

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/fluxinstance/kubectl-fluxinstance/test/parity"
)

// runs is how many times each process measurement repeats; the median is reported, which keeps
// one run disturbed by the other users of a shared machine from skewing the figure.
const runs = 5

// stats are the medians of one measured command.
type stats struct {
	Wall, CPU time.Duration
	// RSS is the peak resident set size in bytes.
	RSS int64
}

// measure runs run() `runs` times (each is a separate process, measured by parity.Run) and
// returns the medians. A failed run fails the benchmark with its stderr.
func measure(b *testing.B, run func(i int) parity.Result) stats {
	b.Helper()
	var walls, cpus []time.Duration
	var rss []int64
	for i := range runs {
		res := run(i)
		if res.Err != nil {
			b.Fatalf("run %d: %v", i+1, res.Err)
		}
		if len(res.Stdout) == 0 {
			b.Fatalf("run %d printed nothing", i+1)
		}
		walls, cpus, rss = append(walls, res.Wall), append(cpus, res.CPU), append(rss, res.MaxRSS)
	}
	return stats{Wall: median(walls), CPU: median(cpus), RSS: median(rss)}
}

func median[T time.Duration | int64](v []T) T {
	s := append([]T(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// report makes the medians the sub-benchmark's metrics: the wall time as ns/op, CPU and RSS as
// extra units that benchstat understands.
func report(b *testing.B, s stats) {
	b.ReportMetric(float64(s.Wall.Nanoseconds()), "ns/op")
	b.ReportMetric(float64(s.CPU.Microseconds())/1000, "cpu-ms/op")
	b.ReportMetric(float64(s.RSS)/(1<<20), "peak-RSS-MB")
}

// row is one line of the printed table.
type row struct {
	instance, run string
	s             stats
}

func printTable(w io.Writer, title string, rows []row) {
	printTableOf(w, title, runs, rows)
}

// printTableOf is printTable for a benchmark that measures each command n times.
func printTableOf(w io.Writer, title string, n int, rows []row) {
	what := fmt.Sprintf("median of %d runs", n)
	if n == 1 {
		what = "one run each"
	}
	fmt.Fprintf(w, "\n%s (%s; %d CPUs; load average %s)\n", title, what, runtime.NumCPU(), loadAverage())
	fmt.Fprintf(w, "%-12s %-40s %10s %10s %12s\n", "instance", "run", "wall", "CPU", "peak RSS")
	for _, r := range rows {
		// A phase of a process (timed by the process itself) has a wall time only.
		cpu, rss := r.s.CPU.Round(time.Millisecond).String(), fmt.Sprintf("%9.1f MB", float64(r.s.RSS)/(1<<20))
		if r.s.CPU == 0 && r.s.RSS == 0 {
			cpu, rss = "-", "-"
		}
		fmt.Fprintf(w, "%-12s %-40s %10s %10s %12s\n", r.instance, r.run, r.s.Wall.Round(time.Millisecond), cpu, rss)
	}
}

// ratio prints ours/theirs against a target (ratios at or under it meet it) and returns it.
func ratio(w io.Writer, what string, ours, theirs, target float64) float64 {
	r := ours / theirs
	verdict := "meets"
	if r > target {
		verdict = "MISSES"
	}
	fmt.Fprintf(w, "  %-52s %6.3f  (target ≤ %.2f: %s)\n", what, r, target, verdict)
	return r
}

// rssTarget prints a process's peak RSS against a limit in MB and returns it in MB.
func rssTarget(w io.Writer, what string, rss int64, limitMB float64) float64 {
	mb := float64(rss) / (1 << 20)
	verdict := "meets"
	if mb > limitMB {
		verdict = "MISSES"
	}
	fmt.Fprintf(w, "  %-52s %6.1f MB  (target ≤ %.0f MB: %s)\n", what, mb, limitMB, verdict)
	return mb
}

// loadAverage tells how busy the machine was: the figures of a shared machine depend on it.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
