package main

// What the benchmark reads of the processes and the machine: /proc for CPU
// time and memory, the daemon's CPU profile over the window.

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

type procCPU struct {
	ticks   uint64 // utime + stime
	threads int
	// reaped is cutime + cstime: the CPU of the children the process has
	// waited for.
	reaped uint64
	ppid   int
	comm   string
}

// readProcCPU reads utime and stime (fields 14 and 15 of /proc/<pid>/stat,
// in clock ticks), cutime and cstime (16 and 17), num_threads (field 20),
// the parent's pid (4) and the command name (2).
func readProcCPU(pid int) (procCPU, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procCPU{}, err
	}
	// The command name (field 2) may hold spaces: split after its ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	j := strings.IndexByte(s, '(')
	if i < 0 || j < 0 || j > i {
		return procCPU{}, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, s)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 18 {
		return procCPU{}, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, s)
	}
	pp, err0 := strconv.Atoi(f[1])
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	cut, err3 := strconv.ParseUint(f[13], 10, 64)
	cst, err4 := strconv.ParseUint(f[14], 10, 64)
	th, err5 := strconv.Atoi(f[17])
	if err := errors.Join(err0, err1, err2, err3, err4, err5); err != nil {
		return procCPU{}, err
	}
	return procCPU{ticks: ut + st, threads: th, reaped: cut + cst, ppid: pp, comm: s[j+1 : i]}, nil
}

// childProc is one child process of the daemon at a snapshot.
type childProc struct {
	pid  int
	comm string
	cpu  uint64 // utime + stime
	rss  uint64 // VmRSS, bytes
	anon uint64 // RssAnon, bytes (the rest is mostly ffmpeg's shared libraries)
}

// children lists the processes whose parent is pid (the daemon's ffmpeg
// transcoders), from every /proc/<n>/stat.
func children(pid int) []childProc {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []childProc
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n == pid {
			continue
		}
		st, err := readProcCPU(n)
		if err != nil || st.ppid != pid {
			continue
		}
		_, rss, _ := readProcMem(n)
		out = append(out, childProc{pid: n, comm: st.comm, cpu: st.ticks, rss: rss, anon: procStatusBytes(n, "RssAnon")})
	}
	return out
}

// childTicks is the CPU the daemon's children have used so far: those
// alive (or not yet reaped) and those it has reaped. Its difference over
// the window counts a child that started, ended or was restarted within it
// (only a child reaped between the two reads of one snapshot could be
// counted twice or not at all).
func childTicks(daemon procCPU, kids []childProc) uint64 {
	t := daemon.reaped
	for _, k := range kids {
		t += k.cpu
	}
	return t
}

// phasePeaks are the daemon's VmHWM at the end of each phase, each reset
// (when the kernel allows) at the start of the next.
type phasePeaks struct {
	// start: before logging in; setup: the API calls and the OAuth flow;
	// cold: the cameras' first readers starting their streams; baseline:
	// the first readers alone; join: the joiners connecting and playing.
	start, setup, cold, baseline, join, warmup, window uint64
	resetOK                                            bool
	resetErr                                           error
	tried                                              bool
}

// mark reads VmHWM into *at, then resets it to the current RSS.
func (m *phasePeaks) mark(pid int, at *uint64) {
	*at, _, _ = readProcMem(pid)
	err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	if !m.tried {
		m.tried, m.resetOK, m.resetErr = true, err == nil, err
	} else if err != nil {
		m.resetOK, m.resetErr = false, err
	}
}

// sampleRSS polls VmRSS for d and returns its least and greatest values,
// leaving out those of the first skip.
func sampleRSS(pid int, d, skip, every time.Duration) (lo, hi uint64) {
	start := time.Now()
	end := start.Add(d)
	for {
		if _, rss, err := readProcMem(pid); err == nil && time.Since(start) >= skip {
			if lo == 0 || rss < lo {
				lo = rss
			}
			hi = max(hi, rss)
		}
		left := time.Until(end)
		if left <= 0 {
			return lo, hi
		}
		time.Sleep(min(every, left))
	}
}

// collectGarbage has the daemon run a GC, through the heap profile of its
// net/http/pprof (…/heap?gc=1, next to the CPU profile at pprofURL): the
// set-up leaves garbage (argon2id's memory for each login) that the
// runtime would otherwise return to the OS only after its next GC, some
// seconds on, inflating the RSS baseline. It says what happened.
func collectGarbage(pprofURL string) string {
	base, ok := strings.CutSuffix(pprofURL, "/profile")
	if !ok {
		return "no GC asked (--pprof is not a …/profile URL)"
	}
	cl := &http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Get(base + "/heap?gc=1")
	if err != nil {
		return fmt.Sprintf("no GC (%v)", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body) //nolint:errcheck // only draining
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("no GC (the daemon answered %s)", resp.Status)
	}
	return "GC run through the daemon's pprof"
}

func (m phasePeaks) max() uint64 {
	return max(m.start, m.setup, m.cold, m.baseline, m.join, m.warmup, m.window)
}

// procStatusBytes returns one "<key>: N kB" line of /proc/<pid>/status in bytes.
func procStatusBytes(pid int, key string) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				n, _ := strconv.ParseUint(f[0], 10, 64)
				return n * 1024
			}
		}
	}
	return 0
}

// readProcMem returns VmHWM and VmRSS of /proc/<pid>/status in bytes.
func readProcMem(pid int) (hwm, rss uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, _ := strconv.ParseUint(f[0], 10, 64)
		switch k {
		case "VmHWM":
			hwm = n * 1024
		case "VmRSS":
			rss = n * 1024
		}
	}
	return hwm, rss, nil
}

// machineCPU reads the aggregate line of /proc/stat: busy and total ticks.
func machineCPU() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	for i, s := range f[1:] {
		n, _ := strconv.ParseUint(s, 10, 64)
		if i == 7 { // steal: time the hypervisor gave to others
			continue
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

func clockTicks() int {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && n > 0 {
			return n
		}
	}
	return 100
}
func numCPU() int { return runtime.NumCPU() }

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return "Linux " + strings.TrimSpace(string(b))
}

func procCmdline(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// ---- Profile ----

type profileFetch struct{ done chan string }

func (p *profileFetch) wait() string { return <-p.done }

// fetchProfile asks the daemon for a CPU profile covering the window. The
// daemon may expose no profiler: then it reports why it was skipped.
func fetchProfile(url string, d time.Duration, out string) *profileFetch {
	p := &profileFetch{done: make(chan string, 1)}
	go func() {
		sep := "?"
		if strings.Contains(url, "?") {
			sep = "&"
		}
		full := fmt.Sprintf("%s%sseconds=%d", url, sep, int(d.Round(time.Second)/time.Second))
		cl := &http.Client{Timeout: d + 30*time.Second}
		resp, err := cl.Get(full)
		if err != nil {
			p.done <- fmt.Sprintf("skipped (%v)", err)
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			p.done <- fmt.Sprintf("skipped (the daemon exposes no profile: %s answered %s)", url, resp.Status)
			return
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			p.done <- fmt.Sprintf("skipped (%v)", err)
			return
		}
		if len(body) < 2 || body[0] != 0x1f || body[1] != 0x8b {
			p.done <- fmt.Sprintf("skipped (%s answered something that is not a gzipped pprof profile)", url)
			return
		}
		if err := os.WriteFile(out, body, 0o644); err != nil {
			p.done <- fmt.Sprintf("skipped (%v)", err)
			return
		}
		p.done <- fmt.Sprintf("CPU profile of the window written to %s (go tool pprof -top %s)", out, out)
	}()
	return p
}
