// Over 500 lines: a self-contained measuring tool (set-up, readers, sampling and report) kept in one file to be read top to bottom.

// Command nestmtx-relaybench measures what relaying one camera costs the
// daemon: it authorizes a credential against a running `nestmtx serve`
// (pointed at `nestmtx simulate`) through the MQTT API, serves a camera at
// a path (the first RTSP camera, or the one --camera names, such as the
// simulator's WebRTC camera "Living Room"), optionally sets its audio mode
// (--audio aac makes the daemon transcode a WebRTC camera's Opus with an
// ffmpeg child), connects N RTSP readers over TCP, and after a warm-up
// measures the daemon process from /proc over a fixed window: CPU time
// (utime+stime) as a percentage of one core, that of its child processes
// (the AAC transcoder) apart and in the total, peak and current resident
// memory, and what the readers received (packets and Mbit/s).
//
// scripts/bench-relay.sh builds the clip, starts both processes and runs it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"

	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

type options struct {
	broker, base         string
	user, password       string
	httpAddr, rtspAddr   string
	credential           string
	path                 string
	readers              int
	warmup, duration     time.Duration
	pid, simPID          int
	clipDir              string
	pprofURL, pprofOut   string
	command              string
	clkTck               int
	setupTimeout         time.Duration
	minReaderRatio       float64
	allowDisconnectedRdr bool
	camera, audio        string
}

func main() {
	var o options
	flag.StringVar(&o.broker, "broker", "127.0.0.1:1883", "the daemon's MQTT broker (host:port)")
	flag.StringVar(&o.base, "base-topic", "nestmtx", "the daemon's base topic")
	flag.StringVar(&o.user, "username", "admin", "API user")
	flag.StringVar(&o.password, "password", os.Getenv("NESTMTX_ADMIN_PASSWORD"), "API password (default $NESTMTX_ADMIN_PASSWORD)")
	flag.StringVar(&o.httpAddr, "http", "127.0.0.1:2000", "the daemon's HTTP address, for the OAuth redirect URI")
	flag.StringVar(&o.rtspAddr, "rtsp", "127.0.0.1:8554", "the daemon's RTSP address")
	flag.StringVar(&o.credential, "credential", "", "credentials create payload as JSON (the '# payload:' line `nestmtx simulate` prints); default: the simulator's built-in client and project")
	flag.StringVar(&o.path, "path", "bench", "mtx_path to serve the camera at")
	flag.IntVar(&o.readers, "readers", 50, "RTSP readers over TCP")
	flag.DurationVar(&o.warmup, "warmup", 5*time.Second, "time between the last reader playing and the measured window")
	flag.DurationVar(&o.duration, "duration", 30*time.Second, "measured window")
	flag.IntVar(&o.pid, "pid", 0, "the daemon's process id (required: its CPU and memory are what is measured)")
	flag.IntVar(&o.simPID, "sim-pid", 0, "the simulator's process id, to show its CPU alongside (optional)")
	flag.StringVar(&o.clipDir, "clip-dir", "", "directory with the clip.h264 and clip.aac the simulator plays, to print its real bitrate (optional)")
	flag.StringVar(&o.pprofURL, "pprof", "", "URL of the daemon's CPU profile endpoint (net/http/pprof, e.g. http://127.0.0.1:2000/debug/pprof/profile); fetched over the window, skipped if the daemon exposes nothing there")
	flag.StringVar(&o.pprofOut, "pprof-out", "relaybench-daemon.cpu.pprof", "where to write the profile fetched with --pprof")
	flag.StringVar(&o.command, "command", "", "the command line that started the benchmark, printed with the results")
	flag.IntVar(&o.clkTck, "clk-tck", 0, "clock ticks per second of /proc/<pid>/stat (default: getconf CLK_TCK, else 100)")
	flag.DurationVar(&o.setupTimeout, "setup-timeout", 90*time.Second, "how long logging in, authorization and the camera sync may take")
	flag.Float64Var(&o.minReaderRatio, "min-reader-ratio", 0.95, "fail unless every reader received at least this share of the best reader's packets in the window")
	flag.BoolVar(&o.allowDisconnectedRdr, "allow-disconnects", false, "do not fail when a reader disconnects during the run")
	flag.StringVar(&o.camera, "camera", "", "the camera to serve, by name as `cameras list` shows it (e.g. \"Living Room\", the simulator's WebRTC camera) or by id; default: the first RTSP camera")
	flag.StringVar(&o.audio, "audio", "", "set the camera's audio before reading: opus, aac (a WebRTC camera's Opus made AAC by an ffmpeg child of the daemon), none, or default (the global camera_audio); empty leaves it as it is")
	flag.Parse()
	if o.pid <= 0 {
		fmt.Fprintln(os.Stderr, "nestmtx-relaybench: --pid (the daemon's process id) is required")
		os.Exit(2)
	}
	if o.readers <= 0 || o.duration <= 0 || o.warmup < 0 {
		fmt.Fprintln(os.Stderr, "nestmtx-relaybench: --readers and --duration must be positive, --warmup not negative")
		os.Exit(2)
	}
	switch o.audio {
	case "", "opus", "aac", "none", "default":
	default:
		fmt.Fprintf(os.Stderr, "nestmtx-relaybench: --audio must be opus, aac, none or default, not %q\n", o.audio)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "nestmtx-relaybench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.clkTck <= 0 {
		o.clkTck = clockTicks()
	}
	if _, err := readProcCPU(o.pid); err != nil {
		return fmt.Errorf("daemon pid %d: %w", o.pid, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.setupTimeout)
	defer cancel()

	// Peak RSS by phase: VmHWM is read, then reset (clear_refs 5), at each
	// phase's end, so that the streaming phases are not hidden by the
	// set-up's peak (argon2id logins, the OAuth flow).
	var mem phasePeaks
	mem.mark(o.pid, &mem.start)
	api, err := dialAPI(ctx, o)
	if err != nil {
		return err
	}
	defer api.close()
	cam, err := api.prepareCamera(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "camera %d %q (%s, %s, %s, audio %s) served at rtsp://%s/%s\n", cam.ID, cam.Name, cam.Resolution,
		strings.Join(append(slices.Clone(cam.CodecsVideo), cam.CodecsAudio...), "+"), strings.Join(cam.Protocols, "+"),
		cam.audioMode(), o.rtspAddr, o.path)

	// The readers log in as the API user, as Frigate does with its URL.
	readURL := (&url.URL{Scheme: "rtsp", User: url.UserPassword(o.user, o.password), Host: o.rtspAddr, Path: "/" + o.path}).String()
	mem.mark(o.pid, &mem.setup)
	rs, err := startReaders(readURL, o.readers, nil)
	if rs != nil {
		defer rs.close()
	}
	if err != nil {
		return err
	}
	mem.mark(o.pid, &mem.join)
	if err := checkAudioTrack(o.audio, cam, rs.tracks); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%d readers playing (tracks %s); warming up for %s\n", len(rs.list), strings.Join(rs.tracks, "+"), o.warmup)
	time.Sleep(o.warmup)
	if err := rs.err(); err != nil && !o.allowDisconnectedRdr {
		return fmt.Errorf("during warm-up: %w", err)
	}
	mem.mark(o.pid, &mem.warmup)

	// The measured window.
	var prof *profileFetch
	if o.pprofURL != "" {
		prof = fetchProfile(o.pprofURL, o.duration, o.pprofOut)
	}
	fmt.Fprintf(os.Stderr, "measuring for %s\n", o.duration)
	before := snapshot(o, rs)
	rssLo, rssHi := sampleRSS(o.pid, o.duration, 100*time.Millisecond)
	after := snapshot(o, rs)
	rerr := rs.err()

	mem.mark(o.pid, &mem.window)
	res := compute(o, before, after)
	res.mem = mem
	res.rssLo, res.rssHi = rssLo, rssHi
	res.tracks = rs.tracks
	res.print(os.Stdout, o, cam)
	if prof != nil {
		fmt.Fprintf(os.Stdout, "pprof:            %s\n", prof.wait())
	}
	if rerr != nil && !o.allowDisconnectedRdr {
		return rerr
	}
	if res.minReaderPkts < o.minReaderRatio*res.maxReaderPkts {
		return fmt.Errorf("readers received unequal amounts (min %.0f, max %.0f packets): some fell behind or lost packets",
			res.minReaderPkts, res.maxReaderPkts)
	}
	if res.pktsPerSec == 0 {
		return errors.New("the readers received nothing in the window")
	}
	return nil
}

// ---- The daemon's API ----

type apiClient struct {
	c     *testkit.Client
	rr    *testkit.RR
	token string
}

type camera struct {
	ID          uint64   `json:"id"`
	Name        string   `json:"name"`
	Path        string   `json:"mtx_path"`
	IsEnabled   bool     `json:"is_enabled"`
	Protocols   []string `json:"protocols"`
	Resolution  string   `json:"resolution"`
	CodecsVideo []string `json:"codecs_video"`
	CodecsAudio []string `json:"codecs_audio"`
	Audio       *string  `json:"audio"` // null: the global camera_audio
	Missing     bool     `json:"missing"`
}

func (c camera) audioMode() string {
	if c.Audio == nil {
		return "default"
	}
	return *c.Audio
}

// webRTCOnly says whether the daemon reads the camera over WebRTC (Google
// offers it no RTSP stream).
func (c camera) webRTCOnly() bool {
	return !slices.Contains(c.Protocols, "RTSP") && slices.Contains(c.Protocols, "WEB_RTC")
}

func dialAPI(ctx context.Context, o options) (*apiClient, error) {
	var c *testkit.Client
	var err error
	for {
		c, err = testkit.DialErr(o.broker, o.user, o.password, fmt.Sprintf("nestmtx-relaybench-%d", os.Getpid()))
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("MQTT broker %s: %w", o.broker, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	rr, err := c.NewRR(o.base + "/requests")
	if err != nil {
		c.Close()
		return nil, err
	}
	a := &apiClient{c: c, rr: rr}
	var login struct {
		Bearer string `json:"bearer"`
	}
	if err := a.call(ctx, map[string]any{"command": "create", "module": "auth",
		"payload": map[string]any{"username": o.user, "password": o.password}}, &login); err != nil {
		c.Close()
		return nil, fmt.Errorf("login: %w", err)
	}
	a.token = login.Bearer
	return a, nil
}

func (a *apiClient) close() { a.c.Close() }

// call sends one API request and decodes a successful reply into v.
func (a *apiClient) call(ctx context.Context, req map[string]any, v any) error {
	return a.rr.Request(ctx, a.token, req, v)
}

func (a *apiClient) cameras(ctx context.Context) ([]camera, error) {
	var list struct{ Items []camera }
	err := a.call(ctx, map[string]any{"command": "list", "module": "cameras",
		"payload": map[string]any{"itemsPerPage": 500}}, &list)
	slices.SortFunc(list.Items, func(x, y camera) int { return int(x.ID) - int(y.ID) })
	return list.Items, err
}

// prepareCamera authorizes a credential (unless the daemon already lists
// the camera), serves the camera (o.camera, else the first RTSP one) at
// o.path and sets its audio mode when o.audio asks for one.
func (a *apiClient) prepareCamera(ctx context.Context, o options) (camera, error) {
	cams, err := a.cameras(ctx)
	if err != nil {
		return camera{}, err
	}
	if pickCamera(cams, o.camera) == nil {
		if err := a.authorize(ctx, o); err != nil {
			return camera{}, err
		}
		for pickCamera(cams, o.camera) == nil {
			select {
			case <-ctx.Done():
				want := "no RTSP camera"
				if o.camera != "" {
					want = fmt.Sprintf("no camera %q", o.camera)
				}
				names := make([]string, len(cams))
				for i, c := range cams {
					names[i] = fmt.Sprintf("%d %q (%s)", c.ID, c.Name, strings.Join(c.Protocols, "+"))
				}
				return camera{}, fmt.Errorf("%s listed after the authorization (listed: %s)", want, strings.Join(names, ", "))
			case <-time.After(250 * time.Millisecond):
			}
			if cams, err = a.cameras(ctx); err != nil {
				return camera{}, err
			}
		}
	}
	cam := *pickCamera(cams, o.camera)
	payload := map[string]any{"mtx_path": o.path, "is_enabled": true}
	switch o.audio {
	case "":
	case "default":
		payload["audio"] = nil
	default:
		payload["audio"] = o.audio
	}
	if cam.Path == o.path && cam.IsEnabled && o.audio == "" {
		return cam, nil
	}
	err = a.call(ctx, map[string]any{"command": "update", "module": "cameras", "entity": fmt.Sprint(cam.ID),
		"payload": payload}, &cam)
	return cam, err
}

// pickCamera is the listed camera named (or numbered) name, or with no
// name the first RTSP one; never one Google no longer lists.
func pickCamera(cams []camera, name string) *camera {
	for i := range cams {
		c := &cams[i]
		switch {
		case c.Missing:
		case name == "" && slices.Contains(c.Protocols, "RTSP"):
			return c
		case name != "" && (c.Name == name || fmt.Sprint(c.ID) == name):
			return c
		}
	}
	return nil
}

// checkAudioTrack fails when the readers' SDP (tracks, the codec of each
// medium) does not carry the audio that --audio asked for, so that a
// daemon without ffmpeg, say, is not measured as if it transcoded.
func checkAudioTrack(audio string, cam camera, tracks []string) error {
	var want string // the audio codec expected; "-" none
	switch audio {
	case "none":
		want = "-"
	case "aac":
		want = "MPEG-4 Audio"
	case "opus":
		if cam.webRTCOnly() {
			want = "Opus"
		} else {
			want = "MPEG-4 Audio" // Google's RTSP streams carry AAC
		}
	default:
		return nil
	}
	got := "-"
	for _, t := range tracks[min(1, len(tracks)):] {
		got = t
	}
	if got != want {
		what := "no audio track"
		if want != "-" {
			what = "a " + want + " track"
		}
		return fmt.Errorf("--audio %s: the readers' SDP has tracks %s, want %s after the video (for aac: is ffmpeg on the daemon's PATH?)",
			audio, strings.Join(tracks, "+"), what)
	}
	return nil
}

// authorize goes through the OAuth flow as a person would: create the
// credential, ask for the consent URL, open it (the simulator consents at
// once and redirects), then load the daemon's callback.
func (a *apiClient) authorize(ctx context.Context, o options) error {
	payload := map[string]any{"description": "relay benchmark", "oauth_client_id": nestsim.DefaultClientID,
		"oauth_client_secret": nestsim.DefaultClientSecret, "dac_project_id": nestsim.DefaultProjectID}
	if o.credential != "" {
		payload = map[string]any{}
		if err := json.Unmarshal([]byte(o.credential), &payload); err != nil {
			return fmt.Errorf("--credential: %w", err)
		}
	}
	var cred struct {
		ID uint64 `json:"id"`
	}
	if err := a.call(ctx, map[string]any{"command": "create", "module": "credentials", "payload": payload}, &cred); err != nil {
		return err
	}
	redirect := "http://" + o.httpAddr + "/oauth/callback"
	var authURL string
	if err := a.call(ctx, map[string]any{"command": "update", "module": "credentials", "entity": fmt.Sprint(cred.ID),
		"payload": map[string]any{"redirect_uri": redirect}}, &authURL); err != nil {
		return err
	}
	return testkit.ConsentAsBrowser(authURL, redirect)
}

// ---- Readers ----

// counters are one reader's, written by its gortsplib reading goroutine and
// read by the measurement; padded so readers do not share cache lines.
type counters struct {
	pkts, bytes, video, audio, lost atomic.Uint64
	_                               [24]byte
}

type reader struct {
	c *gortsplib.Client
	n counters
}

type readers struct {
	list    []*reader
	tracks  []string // the codec of each medium of the first reader's SDP
	mu      sync.Mutex
	errs    []error
	closing atomic.Bool
}

func (rs *readers) fail(i int, err error) {
	rs.mu.Lock()
	rs.errs = append(rs.errs, fmt.Errorf("reader %d: %w", i, err))
	rs.mu.Unlock()
}

func (rs *readers) err() error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if len(rs.errs) == 0 {
		return nil
	}
	return fmt.Errorf("%d reader(s) failed, first: %w", len(rs.errs), rs.errs[0])
}

func (rs *readers) close() {
	rs.closing.Store(true)
	for _, r := range rs.list {
		r.c.Close()
	}
}

// startReaders connects the first reader alone (its DESCRIBE starts the
// camera on demand and is held until frames flow), then the rest, a few
// at a time. onPacket, if not nil, runs after each counted RTP packet.
func startReaders(url string, n int, onPacket func(*counters)) (*readers, error) {
	u, err := base.ParseURL(url)
	if err != nil {
		return nil, err
	}
	rs := &readers{list: make([]*reader, n)}
	start := func(i int) error {
		tcp := gortsplib.TransportTCP
		r := &reader{}
		r.c = &gortsplib.Client{
			Scheme:        u.Scheme,
			Host:          u.Host,
			Transport:     &tcp,
			ReadTimeout:   10 * time.Second,
			UserAgent:     "nestmtx-relaybench",
			OnPacketsLost: func(lost uint64) { r.n.lost.Add(lost) },
			OnDecodeError: func(error) {},
		}
		if err := r.c.Start2(); err != nil {
			return err
		}
		rs.mu.Lock()
		rs.list[i] = r
		rs.mu.Unlock()
		desc, _, err := r.c.Describe(u)
		if err != nil {
			return err
		}
		if i == 0 {
			for _, m := range desc.Medias {
				codec := "?"
				if len(m.Formats) > 0 {
					codec = m.Formats[0].Codec()
				}
				rs.tracks = append(rs.tracks, codec)
			}
		}
		if err := r.c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
			return err
		}
		r.c.OnPacketRTPAny(func(m *description.Media, _ format.Format, p *rtp.Packet) {
			r.n.pkts.Add(1)
			r.n.bytes.Add(uint64(p.MarshalSize()))
			if m.Type == description.MediaTypeVideo {
				r.n.video.Add(1)
			} else {
				r.n.audio.Add(1)
			}
			if onPacket != nil {
				onPacket(&r.n)
			}
		})
		if _, err := r.c.Play(nil); err != nil {
			return err
		}
		go func() {
			if err := r.c.Wait(); err != nil && !rs.closing.Load() {
				rs.fail(i, err)
			}
		}()
		return nil
	}
	if err := start(0); err != nil {
		rs.list = slices.DeleteFunc(rs.list, func(r *reader) bool { return r == nil })
		return rs, fmt.Errorf("first reader of %s: %w", u.CloneWithoutCredentials(), err)
	}
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for i := 1; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			if err := start(i); err != nil {
				firstErr.CompareAndSwap(nil, fmt.Errorf("reader %d: %w", i, err))
			}
		}(i)
	}
	wg.Wait()
	rs.list = slices.DeleteFunc(rs.list, func(r *reader) bool { return r == nil })
	if err, _ := firstErr.Load().(error); err != nil {
		return rs, err
	}
	return rs, nil
}

// ---- Measurement ----

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
	start, setup, join, warmup, window uint64
	resetOK                            bool
	resetErr                           error
	tried                              bool
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

// sampleRSS polls VmRSS for d and returns its least and greatest values.
func sampleRSS(pid int, d, every time.Duration) (lo, hi uint64) {
	end := time.Now().Add(d)
	for {
		if _, rss, err := readProcMem(pid); err == nil {
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

func (m phasePeaks) max() uint64 { return max(m.start, m.setup, m.join, m.warmup, m.window) }

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

type snap struct {
	at                time.Time
	daemon, sim, self procCPU
	kids              []childProc // the daemon's
	simOK             bool
	busy, total       uint64
	perReader         []readerSnap
}

type readerSnap struct{ pkts, bytes, video, audio, lost uint64 }

func snapshot(o options, rs *readers) snap {
	var s snap
	s.perReader = make([]readerSnap, len(rs.list))
	for i, r := range rs.list {
		s.perReader[i] = readerSnap{r.n.pkts.Load(), r.n.bytes.Load(), r.n.video.Load(), r.n.audio.Load(), r.n.lost.Load()}
	}
	s.busy, s.total = machineCPU()
	s.daemon, _ = readProcCPU(o.pid)
	s.kids = children(o.pid)
	s.self, _ = readProcCPU(os.Getpid())
	if o.simPID > 0 {
		var err error
		s.sim, err = readProcCPU(o.simPID)
		s.simOK = err == nil
	}
	s.at = time.Now()
	return s
}

type result struct {
	window                       time.Duration
	cpuPct, simPct, selfPct      float64
	machinePct                   float64 // of all cores, 100% = every core busy
	cpuSeconds                   float64
	threads                      int
	hwm, rss                     uint64
	mem                          phasePeaks
	rssLo, rssHi                 uint64 // VmRSS sampled over the window
	rssAnon, rssFile             uint64 // at the window's end
	pktsPerSec, mbitPerSec       float64
	videoPerSec, audioPerSec     float64
	lost                         uint64
	perReaderPkts, perReaderMbit []float64
	minReaderPkts, maxReaderPkts float64
	// The daemon's child processes (the AAC transcoder): their CPU over
	// the window, those alive at its end, and their summed RSS then.
	childPct, childSeconds float64
	kids                   []childProc
	childRSS, childAnon    uint64
	tracks                 []string // the codecs of the readers' SDP
}

func compute(o options, a, b snap) result {
	r := result{window: b.at.Sub(a.at)}
	sec := r.window.Seconds()
	tick := float64(o.clkTck)
	r.cpuSeconds = float64(b.daemon.ticks-a.daemon.ticks) / tick
	r.cpuPct = 100 * r.cpuSeconds / sec
	r.selfPct = 100 * float64(b.self.ticks-a.self.ticks) / tick / sec
	if a.simOK && b.simOK {
		r.simPct = 100 * float64(b.sim.ticks-a.sim.ticks) / tick / sec
	} else {
		r.simPct = -1
	}
	if b.total > a.total {
		r.machinePct = 100 * float64(b.busy-a.busy) / float64(b.total-a.total)
	}
	if kb, ka := childTicks(b.daemon, b.kids), childTicks(a.daemon, a.kids); kb > ka {
		r.childSeconds = float64(kb-ka) / tick
	}
	r.childPct = 100 * r.childSeconds / sec
	r.kids = b.kids
	for _, k := range b.kids {
		r.childRSS += k.rss
		r.childAnon += k.anon
	}
	r.threads = b.daemon.threads
	r.hwm, r.rss, _ = readProcMem(o.pid)
	r.rssAnon, r.rssFile = procStatusBytes(o.pid, "RssAnon"), procStatusBytes(o.pid, "RssFile")
	var pkts, bytes, video, audio float64
	r.minReaderPkts = -1
	for i := range b.perReader {
		d := readerSnap{b.perReader[i].pkts - a.perReader[i].pkts, b.perReader[i].bytes - a.perReader[i].bytes,
			b.perReader[i].video - a.perReader[i].video, b.perReader[i].audio - a.perReader[i].audio,
			b.perReader[i].lost - a.perReader[i].lost}
		p := float64(d.pkts)
		pkts += p
		bytes += float64(d.bytes)
		video += float64(d.video)
		audio += float64(d.audio)
		r.lost += d.lost
		r.perReaderPkts = append(r.perReaderPkts, p/sec)
		r.perReaderMbit = append(r.perReaderMbit, float64(d.bytes)*8/sec/1e6)
		if r.minReaderPkts < 0 || p < r.minReaderPkts {
			r.minReaderPkts = p
		}
		r.maxReaderPkts = max(r.maxReaderPkts, p)
	}
	r.pktsPerSec = pkts / sec
	r.mbitPerSec = bytes * 8 / sec / 1e6
	r.videoPerSec = video / sec
	r.audioPerSec = audio / sec
	return r
}

func stats(v []float64) (lo, med, hi float64) {
	if len(v) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[0], s[len(s)/2], s[len(s)-1]
}

func (r result) print(w io.Writer, o options, cam camera) {
	mib := func(b uint64) float64 { return float64(b) / (1 << 20) }
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p("== nestmtx relay benchmark ==")
	p("machine:          %d cores, %s, %s", numCPU(), cpuModel(), kernel())
	if o.command != "" {
		p("command:          %s", o.command)
	}
	p("bench tool:       %s", strings.Join(os.Args, " "))
	p("daemon:           pid %d: %s", o.pid, procCmdline(o.pid))
	clip := clipInfo(o.clipDir)
	if cam.webRTCOnly() {
		clip += "; over WebRTC the simulator sends its video with its built-in Opus tone instead of the AAC"
	}
	p("clip:             %s", clip)
	p("camera:           %q %s, served at rtsp://%s/%s; Google protocols %s, audio %s, tracks %s", cam.Name, cam.Resolution, o.rtspAddr, o.path,
		strings.Join(cam.Protocols, "+"), cam.audioMode(), strings.Join(r.tracks, "+"))
	p("readers:          %d over TCP (gortsplib v4 clients), warm-up %s, window %s", len(r.perReaderPkts), o.warmup, r.window.Round(time.Millisecond))
	p("daemon CPU:       %.2f s in %.1f s = %.2f%% of one core (utime+stime, CLK_TCK %d), %d threads",
		r.cpuSeconds, r.window.Seconds(), r.cpuPct, o.clkTck, r.threads)
	kids := "none"
	if len(r.kids) > 0 {
		names := make([]string, len(r.kids))
		for i, k := range r.kids {
			names[i] = fmt.Sprintf("%s pid %d", k.comm, k.pid)
		}
		kids = strings.Join(names, ", ")
	}
	p("daemon children:  %.2f s = %.2f%% of one core (utime+stime of the children, alive or reaped), RSS %.1f MiB (anon %.1f) at the window's end; alive then: %s",
		r.childSeconds, r.childPct, mib(r.childRSS), mib(r.childAnon), kids)
	p("daemon+children:  %.2f%% of one core", r.cpuPct+r.childPct)
	m := r.mem
	p("daemon memory:    peak RSS (VmHWM) %.1f MiB over the process's life; RSS in the window %.1f-%.1f MiB (sampled every 100 ms), at its end %.1f MiB (anon %.1f, file %.1f)",
		mib(m.max()), mib(r.rssLo), mib(r.rssHi), mib(r.rss), mib(r.rssAnon), mib(r.rssFile))
	if m.resetOK {
		p("                  VmHWM by phase (reset to the RSS of the moment at each phase's start): idle %.1f, API set-up %.1f, stream start + %d joins %.1f, warm-up %.1f, window %.1f MiB",
			mib(m.start), mib(m.setup), len(r.perReaderPkts), mib(m.join), mib(m.warmup), mib(m.window))
	} else {
		p("                  VmHWM by phase: unavailable (cannot reset it through /proc/%d/clear_refs: %v)", o.pid, m.resetErr)
	}
	p("received:         %.0f packets/s, %.2f Mbit/s summed over readers (video %.0f/s, audio %.0f/s); lost %d",
		r.pktsPerSec, r.mbitPerSec, r.videoPerSec, r.audioPerSec, r.lost)
	lo, med, hi := stats(r.perReaderPkts)
	p("per reader:       packets/s min %.1f  median %.1f  max %.1f", lo, med, hi)
	lo, med, hi = stats(r.perReaderMbit)
	p("                  Mbit/s    min %.3f  median %.3f  max %.3f", lo, med, hi)
	sim := "n/a"
	if r.simPct >= 0 {
		sim = fmt.Sprintf("%.2f%%", r.simPct)
	}
	p("context:          simulator %s, bench tool (readers) %.2f%% of one core; machine busy %.1f%% of %d cores",
		sim, r.selfPct, r.machinePct, numCPU())
	p("relaybench-result cpu_pct=%.3f cpu_s=%.3f peak_rss_mib=%.1f window_rss_max_mib=%.1f window_rss_min_mib=%.1f rss_mib=%.1f pkts_per_s=%.0f mbit_per_s=%.2f per_reader_pkts_per_s=%.1f per_reader_mbit_per_s=%.3f lost=%d machine_busy_pct=%.1f"+
		" child_cpu_pct=%.3f child_cpu_s=%.3f total_cpu_pct=%.3f children=%d child_rss_mib=%.1f video_pkts_per_s=%.0f audio_pkts_per_s=%.0f sim_cpu_pct=%.3f child_rss_anon_mib=%.1f",
		r.cpuPct, r.cpuSeconds, mib(m.max()), mib(r.rssHi), mib(r.rssLo), mib(r.rss), r.pktsPerSec, r.mbitPerSec, med0(r.perReaderPkts), med0(r.perReaderMbit), r.lost, r.machinePct,
		r.childPct, r.childSeconds, r.cpuPct+r.childPct, len(r.kids), mib(r.childRSS), r.videoPerSec, r.audioPerSec, r.simPct, mib(r.childAnon))
}

func med0(v []float64) float64 { _, m, _ := stats(v); return m }

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

func clipInfo(dir string) string {
	if dir == "" {
		return "unknown (no --clip-dir)"
	}
	vpath, apath := filepath.Join(dir, nestsim.ClipH264File), filepath.Join(dir, nestsim.ClipAACFile)
	c, err := nestsim.LoadClipFiles(vpath, apath)
	if err != nil {
		return "unreadable: " + err.Error()
	}
	vst, err1 := os.Stat(vpath)
	ast, err2 := os.Stat(apath)
	if err1 != nil || err2 != nil {
		return "unreadable"
	}
	vdur := c.Duration().Seconds()
	adur := float64(c.AudioFrames()) * 1024 / float64(c.SampleRate)
	vk := float64(vst.Size()) * 8 / vdur / 1000
	ak := float64(ast.Size()) * 8 / adur / 1000
	return fmt.Sprintf("H.264 %dx%d@%d, %d frames (%.1f s), %.0f kbit/s + AAC %d Hz %d ch %.0f kbit/s = %.2f Mbit/s (file sizes / duration)",
		c.Width, c.Height, c.FPS, c.VideoFrames(), vdur, vk, c.SampleRate, c.Channels, ak, (vk+ak)/1000)
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
