package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nestmtx/nestmtx/internal/credentials"
	"github.com/nestmtx/nestmtx/internal/nest"
	"github.com/nestmtx/nestmtx/internal/relay"
	"github.com/nestmtx/nestmtx/internal/rtspserver"
	"github.com/nestmtx/nestmtx/internal/source"
	"github.com/nestmtx/nestmtx/internal/store"
	"github.com/nestmtx/nestmtx/internal/supervisor"
	"github.com/nestmtx/nestmtx/internal/tlsfiles"
	"github.com/nestmtx/nestmtx/internal/transcode"
)

// resolver lets the RTSP server start before the manager exists: the
// manager needs the server's streams, the server needs the manager's paths.
type resolver struct {
	m atomic.Pointer[supervisor.Manager]
}

func (r *resolver) Lookup(name string) (rtspserver.Path, bool) {
	m := r.m.Load()
	if m == nil {
		return nil, false
	}
	return m.Lookup(name)
}

// startCameras starts the RTSP server, one supervisor per camera row, and
// the credentials' refresh loops and sync.
func (a *App) startCameras(google googleSide) error {
	upstreamTLS, err := upstreamTLS(google.CAFile)
	if err != nil {
		return err
	}
	res := &resolver{}
	a.rtsp, err = rtspserver.Start(rtspserver.Options{Address: a.cfg.RTSPAddress, UDPRTPAddress: a.cfg.RTSPUDPAddress,
		StartTimeout: a.cfg.OnDemandStartTimeout, Resolver: res, Log: a.log,
		Authenticator: a.rtspAuthenticator(), Realm: store.DigestRealm, MaxConns: a.cfg.RTSPMaxConnections})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.stopCameras = cancel
	var creds *credentials.Service
	server := a.rtsp.Gortsplib()
	join, err := relay.ParseJoinMode(a.cfg.LateJoin)
	if err != nil {
		return err
	}
	ffmpeg := a.cfg.FFmpegPath
	if found, err := transcode.FindFFmpeg(ffmpeg); err == nil {
		ffmpeg = found
	}
	a.cameras = &cameraDirectory{defaultAudio: a.cfg.CameraAudio, ffmpeg: a.cfg.FFmpegPath, Manager: supervisor.NewManager(ctx, supervisor.Options{
		NewRelay: func(p relay.Params) (*relay.Relay, error) {
			r, err := relay.New(server, p)
			if err == nil {
				r.SetJoin(join)
			}
			return r, err
		},
		Bus: a.bus, UpstreamTLS: upstreamTLS, WebRTCLoopback: loopbackURL(google.Endpoints.SDMURL), FFmpeg: ffmpeg,
		StartTimeout: a.cfg.OnDemandStartTimeout, CloseAfter: a.cfg.OnDemandCloseAfter,
		StallTimeout: a.cfg.StallTimeout, StatsPeriod: a.statsPeriod, Log: a.log,
		DeviceGone: func(cameraID uint64) { go a.syncCameraCredential(cameraID) },
	}, func(id uint64) (supervisor.SessionAPI, string) {
		c, why := creds.ClientFor(id)
		if c == nil {
			return nil, why // not a nil *nest.Client in a non-nil interface
		}
		return c, why
	})}
	creds = credentials.New(credentials.Options{Store: a.store, Bus: a.bus, Listener: a.cameras, Log: a.log,
		Endpoints: google.Endpoints, OnCommand: a.metrics.googleCommand,
		Limits: a.googleLimits})
	a.creds = creds
	a.registerQuotaHealth()
	res.m.Store(a.cameras.Manager)
	if err := creds.Start(); err != nil {
		return err
	}
	rows, err := a.store.ListCameras()
	if err != nil {
		return err
	}
	for _, c := range rows {
		a.cameras.CameraChanged(c)
	}
	return nil
}

// cameraDirectory hands the camera rows the API and the Google sync change
// to the supervisors, as the configuration each camera runs with: what a
// row means for streaming (enabled, missing, its protocols) is decided here,
// so the supervisor knows nothing of the store.
type cameraDirectory struct {
	*supervisor.Manager
	// defaultAudio is the audio mode of cameras without their own.
	defaultAudio string
	// ffmpeg is the configured ffmpeg, looked up again for each change, so
	// that installing it and touching the camera is enough.
	ffmpeg string
	watch  cameraWatch // told of every row handed over, and deletions (discovery.go)
}

// CameraChanged implements api.CameraListener and the sync's listener.
func (d *cameraDirectory) CameraChanged(row store.Camera) {
	spec := cameraSpec(row)
	spec.Audio, spec.AudioError = d.audio(row, spec.WebRTC)
	d.Apply(spec, row.CredentialID)
	d.watch.notify(row.ID)
}

// audio is the audio mode a camera is served with, and why it is not the
// one asked for. Only a WebRTC camera's AAC needs ffmpeg (Google's RTSP
// streams carry AAC already); without ffmpeg such a camera serves video
// alone and says why in its state.
func (d *cameraDirectory) audio(row store.Camera, webRTC bool) (mode, problem string) {
	mode = row.Audio
	if mode == "" {
		mode = d.defaultAudio
	}
	if mode == "" {
		mode = source.AudioOpus
	}
	if mode != source.AudioAAC || !webRTC {
		return mode, ""
	}
	if _, err := transcode.FindFFmpeg(d.ffmpeg); err != nil {
		return source.AudioNone, err.Error() + "; serving video only"
	}
	return mode, ""
}

func cameraSpec(c store.Camera) supervisor.Spec {
	return supervisor.Spec{ID: c.ID, Name: c.Name, Device: c.UID, Path: c.Path,
		// A camera Google no longer lists is not served, whatever its row
		// says; its settings return with it.
		Enabled: c.IsEnabled && !c.Missing, Persistent: c.IsPersistent,
		// RTSP where the camera has it (no transcoding, fewer moving parts),
		// WebRTC where it has only that.
		WebRTC:      !slices.Contains(c.Protocols, nest.ProtocolRTSP) && slices.Contains(c.Protocols, nest.ProtocolWebRTC),
		Unsupported: unsupported(c.Protocols)}
}

// unsupported says why a camera with these protocols cannot be served, ""
// when it can (or when Google did not say: then an RTSP Generate is asked).
func unsupported(protocols []string) string {
	if len(protocols) == 0 || slices.Contains(protocols, nest.ProtocolRTSP) || slices.Contains(protocols, nest.ProtocolWebRTC) {
		return ""
	}
	return fmt.Sprintf("this camera streams only over %s, which nestmtx cannot serve (it serves RTSP and WebRTC cameras)", strings.Join(protocols, ", "))
}

// loopbackURL says whether raw names a loopback address: Google then is a
// simulator on this host, and WebRTC must be allowed to use loopback.
func loopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	if u.Hostname() == "localhost" {
		return true
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
}

// googleSide is where the daemon finds Google: its endpoints and an extra
// CA for the cameras' streams. The configuration gives it, or the demo's
// simulator does.
type googleSide struct {
	Endpoints nest.Endpoints
	CAFile    string
}

// upstreamTLS trusts the system's CAs plus caFile (NESTMTX_GOOGLE_CA_FILE).
func upstreamTLS(caFile string) (*tls.Config, error) {
	pool, err := tlsfiles.SystemPoolWith(caFile)
	if err != nil {
		return nil, fmt.Errorf("NESTMTX_GOOGLE_CA_FILE: %w", err)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// syncCameraCredential re-lists the devices of a camera's credential, after
// Google said the camera's device is gone, so that the row says so.
func (a *App) syncCameraCredential(cameraID uint64) {
	cam, err := a.store.GetCamera(cameraID)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.creds.Sync(ctx, cam.CredentialID); err != nil {
		a.log.Warn("syncing after a camera disappeared", "camera_id", cameraID, "error", err)
	}
}
