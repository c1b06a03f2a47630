package hooks

import (
	"os"
	"strconv"
	"strings"
)

// passedEnv are the only variables of the daemon's environment a hook
// gets. MediaMTX passes its whole environment on; nestmtx's holds secrets
// (NESTMTX_ADMIN_PASSWORD, NESTMTX_MQTT_PASSWORD, the MQTT_PASS alias),
// which a hook (a script another user may edit, a command that logs its
// environment) must not see. A hook that needs more sets it itself:
// sh -c 'export X=...; ...', or env X=... cmd.
var passedEnv = []string{"PATH", "HOME", "LANG", "TZ"}

// defaultPath is the PATH of a daemon started without one.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// hookEnv is one hook's environment: name=value pairs, later names winning
// as in exec.Cmd.
type hookEnv []string

func (e hookEnv) lookup(name string) (string, bool) {
	for i := len(e) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(e[i], "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}

// env is the environment every hook of path gets: the passed variables,
// MTX_PATH, RTSP_PORT, the regular expression's groups (G1...) and kv.
func (r *Runner) env(path string, groups []string, kv ...string) hookEnv {
	var e hookEnv
	for _, kvs := range r.o.Environ {
		k, _, _ := strings.Cut(kvs, "=")
		for _, p := range passedEnv {
			if k == p {
				e = append(e, kvs)
			}
		}
	}
	if _, ok := e.lookup("PATH"); !ok {
		e = append(e, "PATH="+defaultPath)
	}
	e = append(e, "MTX_PATH="+path, "RTSP_PORT="+r.o.RTSPPort())
	for i := 1; i < len(groups); i++ {
		e = append(e, "G"+strconv.Itoa(i)+"="+groups[i])
	}
	for i := 0; i+1 < len(kv); i += 2 {
		e = append(e, kv[i]+"="+kv[i+1])
	}
	return e
}

// sourceEnv is runOnReady's and runOnNotReady's: the query is the
// publisher's in MediaMTX, and a camera has none.
func (r *Runner) sourceEnv(path string, groups []string, d map[string]any) hookEnv {
	return r.env(path, groups, "MTX_QUERY", "", "MTX_SOURCE_TYPE", str(d, "source_type"), "MTX_SOURCE_ID", str(d, "source_id"))
}

// readerEnv is runOnRead's and runOnUnread's.
func (r *Runner) readerEnv(path string, groups []string, d map[string]any) hookEnv {
	return r.env(path, groups, "MTX_QUERY", str(d, "query"), "MTX_READER_TYPE", str(d, "reader_type"),
		"MTX_READER_ID", str(d, "reader_id"))
}

// expand replaces $NAME and ${NAME} in each argument from the hook's
// environment, as MediaMTX does (so ffmpeg -i rtsp://localhost:$RTSP_PORT/$MTX_PATH
// works without a shell). A name the environment lacks expands to nothing;
// the daemon's own variables are not looked at.
func (e hookEnv) expand(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = os.Expand(a, func(name string) string {
			v, _ := e.lookup(name)
			return v
		})
	}
	return out
}
