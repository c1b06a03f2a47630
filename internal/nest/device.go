package nest

import (
	"encoding/json"
	"slices"
	"strings"
)

// Trait names the package reads.
const (
	TraitInfo             = "sdm.devices.traits.Info"
	TraitCameraLiveStream = "sdm.devices.traits.CameraLiveStream"
)

// Protocol values of CameraLiveStream.supportedProtocols.
const (
	ProtocolRTSP   = "RTSP"
	ProtocolWebRTC = "WEB_RTC"
)

// Device is one SDM device as listed. Traits keeps every trait raw so
// callers can read ones this package does not model.
type Device struct {
	Name       string // enterprises/{p}/devices/{id}
	Type       string // e.g. sdm.devices.types.CAMERA
	CustomName string // Info.customName; often empty for devices set up in the Nest app
	Room       string // parentRelations[0].displayName
	Traits     map[string]json.RawMessage
	LiveStream *LiveStream // nil without the CameraLiveStream trait
}

// LiveStream is the CameraLiveStream trait. Max sizes are 0 when Google
// omits maxVideoResolution.
type LiveStream struct {
	MaxWidth, MaxHeight int
	VideoCodecs         []string
	AudioCodecs         []string
	Protocols           []string
}

// ID is the last segment of Name.
func (d Device) ID() string {
	if i := strings.LastIndexByte(d.Name, '/'); i >= 0 {
		return d.Name[i+1:]
	}
	return d.Name
}

// DisplayName is customName, else the room name, else the device id so
// there is always something to show.
func (d Device) DisplayName() string {
	if n := strings.TrimSpace(d.CustomName); n != "" {
		return n
	}
	if r := strings.TrimSpace(d.Room); r != "" {
		return r
	}
	return d.ID()
}

// IsCamera reports the CameraLiveStream trait; thermostats and the like
// share the device list and must be filtered out.
func (d Device) IsCamera() bool {
	_, ok := d.Traits[TraitCameraLiveStream]
	return ok
}

// SupportsRTSP reports "RTSP" among the supported protocols.
func (d Device) SupportsRTSP() bool {
	return d.LiveStream != nil && slices.Contains(d.LiveStream.Protocols, ProtocolRTSP)
}

// SupportsWebRTC reports "WEB_RTC" among the supported protocols.
func (d Device) SupportsWebRTC() bool {
	return d.LiveStream != nil && slices.Contains(d.LiveStream.Protocols, ProtocolWebRTC)
}

type wireDevice struct {
	Name            string                     `json:"name"`
	Type            string                     `json:"type"`
	Traits          map[string]json.RawMessage `json:"traits"`
	ParentRelations []struct {
		Parent      string `json:"parent"`
		DisplayName string `json:"displayName"`
	} `json:"parentRelations"`
}

type wireLiveStream struct {
	MaxVideoResolution *struct {
		Width  int `json:"width"`
		Height int `json:"height"`
	} `json:"maxVideoResolution"`
	VideoCodecs        []string `json:"videoCodecs"`
	AudioCodecs        []string `json:"audioCodecs"`
	SupportedProtocols []string `json:"supportedProtocols"`
}

func (w wireDevice) toDevice() Device {
	d := Device{Name: w.Name, Type: w.Type, Traits: w.Traits}
	if d.Traits == nil {
		d.Traits = map[string]json.RawMessage{}
	}
	if len(w.ParentRelations) > 0 {
		d.Room = w.ParentRelations[0].DisplayName
	}
	if raw, ok := d.Traits[TraitInfo]; ok {
		var info struct {
			CustomName string `json:"customName"`
		}
		// A malformed Info trait only costs the custom name.
		if json.Unmarshal(raw, &info) == nil {
			d.CustomName = info.CustomName
		}
	}
	if raw, ok := d.Traits[TraitCameraLiveStream]; ok {
		var ls wireLiveStream
		// One odd device must not break the whole list: a malformed trait
		// leaves an empty LiveStream, which supports no protocol.
		_ = json.Unmarshal(raw, &ls)
		d.LiveStream = &LiveStream{
			VideoCodecs: ls.VideoCodecs,
			AudioCodecs: ls.AudioCodecs,
			Protocols:   ls.SupportedProtocols,
		}
		if r := ls.MaxVideoResolution; r != nil {
			d.LiveStream.MaxWidth, d.LiveStream.MaxHeight = r.Width, r.Height
		}
	}
	return d
}
