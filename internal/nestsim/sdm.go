package nestsim

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"
)

const (
	cmdPrefix   = "sdm.devices.commands."
	cmdGenerate = "sdm.devices.commands.CameraLiveStream.GenerateRtspStream"
	cmdExtend   = "sdm.devices.commands.CameraLiveStream.ExtendRtspStream"
	cmdStop     = "sdm.devices.commands.CameraLiveStream.StopRtspStream"

	quotaPerMinute = 10
	quotaWindow    = time.Minute
)

func googleError(code int, msg, status string) *reply {
	return jsonReply(code, map[string]any{"error": map[string]any{
		"code": code, "message": msg, "status": status,
	}})
}

func (s *Sim) handleSDM(r *http.Request) *reply {
	method, dev := "sdm", ""
	rep := func() *reply {
		// enterprises/{p}/devices[/{id}[:executeCommand]]
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/"), "/")
		if len(parts) < 3 || parts[0] != "enterprises" || parts[2] != "devices" || len(parts) > 4 {
			return googleError(http.StatusNotFound, "Requested entity was not found.", "NOT_FOUND")
		}
		var verb string
		switch {
		case len(parts) == 3 && r.Method == http.MethodGet:
			method = "devices.list"
		case len(parts) == 4:
			id, cmd, hasCmd := strings.Cut(parts[3], ":")
			dev = id
			switch {
			case !hasCmd && r.Method == http.MethodGet:
				method = "devices.get"
			case hasCmd && cmd == "executeCommand" && r.Method == http.MethodPost:
				method, verb = "executeCommand", cmd
			default:
				return googleError(http.StatusNotFound, "Requested entity was not found.", "NOT_FOUND")
			}
		default:
			return googleError(http.StatusNotFound, "Requested entity was not found.", "NOT_FOUND")
		}

		var cmd command
		if verb != "" {
			// Parse before auth so the call log can name the command even
			// for rejected calls.
			body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if err == nil {
				err = json.Unmarshal(body, &cmd)
			}
			if err == nil && strings.HasPrefix(cmd.Command, cmdPrefix) {
				method = cmd.Command[strings.LastIndex(cmd.Command, ".")+1:]
			}
			if err != nil {
				if rep := s.checkBearer(r); rep != nil {
					return rep
				}
				return googleError(http.StatusBadRequest, "Invalid JSON payload received.", "INVALID_ARGUMENT")
			}
		}

		if rep := s.checkBearer(r); rep != nil {
			return rep
		}
		if s.faults.takeServerError() {
			return googleError(http.StatusInternalServerError, "Internal error encountered.", "INTERNAL")
		}
		if parts[1] != s.o.ProjectID {
			return googleError(http.StatusNotFound, "Enterprise enterprises/"+parts[1]+" not found.", "NOT_FOUND")
		}
		if verb != "" {
			if s.faults.takeRateLimit() || !s.admitQuota() {
				return googleError(http.StatusTooManyRequests, "Rate limited for the ExecuteDeviceCommand API for the user.", "RESOURCE_EXHAUSTED")
			}
		}
		switch method {
		case "devices.list":
			return s.listDevices()
		case "devices.get":
			d := s.sharedDevice(dev)
			if d == nil {
				return s.deviceNotFound(dev)
			}
			return jsonReply(http.StatusOK, s.deviceJSON(d))
		default:
			return s.executeCommand(dev, cmd)
		}
	}()
	rep.method, rep.device = method, dev
	return rep
}

func (s *Sim) deviceNotFound(id string) *reply {
	return googleError(http.StatusNotFound, "Device "+s.deviceName(id)+" not found.", "NOT_FOUND")
}

// sharedDevice returns the device unless it is unknown or unshared.
func (s *Sim) sharedDevice(id string) *device {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.byID[id]
	if d == nil || d.removed {
		return nil
	}
	return d
}

func (s *Sim) listDevices() *reply {
	s.mu.Lock()
	var shared []*device
	for _, d := range s.devices {
		if !d.removed {
			shared = append(shared, d)
		}
	}
	s.mu.Unlock()
	if len(shared) == 0 {
		return jsonReply(http.StatusOK, map[string]any{})
	}
	list := make([]any, 0, len(shared))
	for _, d := range shared {
		list = append(list, s.deviceJSON(d))
	}
	return jsonReply(http.StatusOK, map[string]any{"devices": list})
}

// admitQuota applies the sandbox's API-level limit when EnforceQuota is on.
// Only admitted calls count, so a client that backs off sees the window
// refill as it would at Google.
func (s *Sim) admitQuota() bool {
	if !s.o.EnforceQuota {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	keep := s.quota[:0]
	for _, t := range s.quota {
		if now.Sub(t) < quotaWindow {
			keep = append(keep, t)
		}
	}
	s.quota = keep
	if len(s.quota) >= quotaPerMinute {
		return false
	}
	s.quota = append(s.quota, now)
	return true
}

type command struct {
	Command string `json:"command"`
	Params  struct {
		StreamExtensionToken string `json:"streamExtensionToken"`
		OfferSdp             string `json:"offerSdp"`
		MediaSessionID       string `json:"mediaSessionId"`
	} `json:"params"`
}

func (s *Sim) executeCommand(id string, cmd command) *reply {
	d := s.sharedDevice(id)
	if d == nil {
		return s.deviceNotFound(id)
	}
	switch cmd.Command {
	case cmdGenerate:
		if !d.isCamera() {
			return googleError(http.StatusBadRequest, "Command not supported for this device.", "INVALID_ARGUMENT")
		}
		if !d.supports(ProtocolRTSP) {
			return googleError(http.StatusBadRequest, "Precondition check failed: the device does not support RTSP streams.", "FAILED_PRECONDITION")
		}
		return s.generate(d)
	case cmdExtend, cmdStop:
		if !d.isCamera() {
			return googleError(http.StatusBadRequest, "Command not supported for this device.", "INVALID_ARGUMENT")
		}
		if cmd.Params.StreamExtensionToken == "" {
			return googleError(http.StatusBadRequest, "streamExtensionToken value must be set. This is a required field.", "INVALID_ARGUMENT")
		}
		if cmd.Command == cmdExtend {
			return s.extend(d, cmd.Params.StreamExtensionToken)
		}
		return s.stop(d, cmd.Params.StreamExtensionToken)
	case cmdGenerateWebRTC, cmdExtendWebRTC, cmdStopWebRTC:
		return s.executeWebRTC(d, cmd)
	default:
		return googleError(http.StatusBadRequest, "Invalid command "+cmd.Command+".", "INVALID_ARGUMENT")
	}
}

func formatExpiry(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

func (s *Sim) generate(d *device) *reply {
	ss, err := s.newSession(d)
	if err != nil {
		s.log.Error("nestsim: cannot create stream", "device", d.cam.ID, "err", err)
		return googleError(http.StatusInternalServerError, "Internal error encountered.", "INTERNAL")
	}
	s.mu.Lock()
	res := map[string]any{"results": map[string]any{
		"streamUrls":           map[string]any{"rtspUrl": s.streamURL(ss)},
		"streamExtensionToken": ss.extToken,
		"streamToken":          ss.streamToken,
		"expiresAt":            formatExpiry(ss.expiresAt),
	}}
	s.mu.Unlock()
	return jsonReply(http.StatusOK, res)
}

func (s *Sim) streamURL(ss *streamSession) string {
	return "rtsps://" + s.rtspAddr + streamPathPrefix + ss.id + "?auth=" + ss.streamToken
}

// lookupExtLocked resolves an extension token for Extend and Stop. A token
// that is not the session's newest is refused even while the session lives,
// because Google chains the tokens.
func (s *Sim) lookupExtLocked(d *device, tok string) (*streamSession, *reply) {
	ss := s.extTokens[tok]
	if ss == nil || ss.dev != d || ss.extToken != tok {
		return nil, googleError(http.StatusBadRequest, "Invalid stream extension token.", "INVALID_ARGUMENT")
	}
	if ss.state == stateLive && !s.now().Before(ss.expiresAt) {
		// The reaper has not run yet; the session is dead all the same.
		return ss, nil
	}
	if ss.state != stateLive {
		return nil, googleError(http.StatusBadRequest, "Precondition check failed: the stream has ended.", "FAILED_PRECONDITION")
	}
	return ss, nil
}

func (s *Sim) extend(d *device, tok string) *reply {
	var cut cutList
	defer cut.do()
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, rep := s.lookupExtLocked(d, tok)
	if rep != nil {
		return rep
	}
	if !s.now().Before(ss.expiresAt) {
		s.endLocked(ss, stateExpired, &cut)
		return googleError(http.StatusBadRequest, "Precondition check failed: the stream has ended.", "FAILED_PRECONDITION")
	}
	if s.faults.extensionsFail() {
		return googleError(http.StatusBadRequest, "Precondition check failed.", "FAILED_PRECONDITION")
	}
	ss.gen++
	ss.streamToken = newStreamToken(ss.gen)
	ss.extToken = randToken(96)
	s.extTokens[ss.extToken] = ss
	ss.extHistory = append(ss.extHistory, ss.extToken)
	ss.expiresAt = s.now().Add(s.o.StreamTTL).Truncate(time.Millisecond)
	s.kickReaper()
	s.log.Debug("nestsim: stream extended", "device", d.cam.ID, "session", ss.id, "gen", ss.gen)
	return jsonReply(http.StatusOK, map[string]any{"results": map[string]any{
		"streamExtensionToken": ss.extToken,
		"streamToken":          ss.streamToken,
		"expiresAt":            formatExpiry(ss.expiresAt),
	}})
}

func (s *Sim) stop(d *device, tok string) *reply {
	var cut cutList
	defer cut.do()
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, rep := s.lookupExtLocked(d, tok)
	if rep != nil {
		return rep
	}
	if !s.now().Before(ss.expiresAt) {
		s.endLocked(ss, stateExpired, &cut)
		return googleError(http.StatusBadRequest, "Precondition check failed: the stream has ended.", "FAILED_PRECONDITION")
	}
	s.endLocked(ss, stateStopped, &cut)
	s.log.Debug("nestsim: stream stopped", "device", d.cam.ID, "session", ss.id)
	return jsonReply(http.StatusOK, map[string]any{})
}
