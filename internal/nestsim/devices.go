package nestsim

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sync/atomic"
)

// structureID is the single home every simulated device belongs to.
const structureID = "AVPHwEtSimHome0000001"

type device struct {
	cam     Device
	removed bool    // guarded by Sim.mu
	player  *player // nil unless the device serves RTSP
	roomID  string
	// noExtend refuses ExtendWebRtcStream (a battery device); guarded by
	// Sim.mu.
	noExtend bool
	// rtcFrames counts video access units sent on its WebRTC sessions.
	rtcFrames atomic.Int64
}

func isCameraType(t string) bool {
	return t == TypeCamera || t == TypeDoorbell || t == TypeDisplay
}

func (d *device) isCamera() bool { return isCameraType(d.cam.Type) }

func (d *device) supports(proto string) bool {
	return d.isCamera() && slices.Contains(d.cam.Protocols, proto)
}

func (s *Sim) initDevices() error {
	for i, c := range s.o.Cameras {
		if c.ID == "" {
			c.ID = "AVPHwEu" + randToken(24)
		}
		if _, dup := s.byID[c.ID]; dup {
			return fmt.Errorf("nestsim: duplicate device id %q", c.ID)
		}
		if c.Type == "" {
			c.Type = TypeCamera
		}
		if isCameraType(c.Type) {
			if len(c.Protocols) == 0 {
				c.Protocols = []string{ProtocolRTSP}
			}
			if c.Width <= 0 || c.Height <= 0 {
				c.Width, c.Height = s.clip.Width, s.clip.Height
			}
		}
		c.Protocols = slices.Clone(c.Protocols)
		d := &device{cam: c, roomID: roomID(c.Room, i), noExtend: c.Battery}
		if d.supports(ProtocolRTSP) {
			d.player = newPlayer(s, d)
		}
		s.devices = append(s.devices, d)
		s.byID[c.ID] = d
	}
	return nil
}

// roomID derives a stable opaque id from the room name so that two devices
// in the same room share a parent, as in a real home.
func roomID(name string, i int) string {
	if name == "" {
		name = fmt.Sprintf("room-%d", i)
	}
	h := sha256.Sum256([]byte(name))
	return "AVPHwEs" + hex.EncodeToString(h[:8])
}

// deviceJSON renders the device in the SDM resource shape.
func (s *Sim) deviceJSON(d *device) map[string]any {
	c := d.cam
	traits := map[string]any{
		"sdm.devices.traits.Info": map[string]any{"customName": c.CustomName},
	}
	if d.isCamera() {
		audio := []string{"AAC"}
		if !d.supports(ProtocolRTSP) {
			audio = []string{"OPUS"}
		}
		traits["sdm.devices.traits.CameraLiveStream"] = map[string]any{
			"maxVideoResolution": map[string]any{"width": c.Width, "height": c.Height},
			"videoCodecs":        []string{"H264"},
			"audioCodecs":        audio,
			"supportedProtocols": c.Protocols,
		}
		traits["sdm.devices.traits.CameraMotion"] = map[string]any{}
		traits["sdm.devices.traits.CameraPerson"] = map[string]any{}
		if d.supports(ProtocolRTSP) {
			traits["sdm.devices.traits.CameraImage"] = map[string]any{
				"maxImageResolution": map[string]any{"width": 1920, "height": 1200},
			}
			traits["sdm.devices.traits.CameraEventImage"] = map[string]any{}
			traits["sdm.devices.traits.CameraSound"] = map[string]any{}
		} else {
			traits["sdm.devices.traits.CameraClipPreview"] = map[string]any{}
		}
		if c.Type == TypeDoorbell {
			traits["sdm.devices.traits.DoorbellChime"] = map[string]any{}
		}
	} else if c.Type == TypeThermostat {
		traits["sdm.devices.traits.Connectivity"] = map[string]any{"status": "ONLINE"}
		traits["sdm.devices.traits.Humidity"] = map[string]any{"ambientHumidityPercent": 41}
		traits["sdm.devices.traits.Temperature"] = map[string]any{"ambientTemperatureCelsius": 20.5}
		traits["sdm.devices.traits.ThermostatMode"] = map[string]any{
			"mode": "HEAT", "availableModes": []string{"HEAT", "OFF"},
		}
		traits["sdm.devices.traits.ThermostatHvac"] = map[string]any{"status": "OFF"}
		traits["sdm.devices.traits.ThermostatTemperatureSetpoint"] = map[string]any{"heatCelsius": 20}
		traits["sdm.devices.traits.Settings"] = map[string]any{"temperatureScale": "CELSIUS"}
	}
	return map[string]any{
		"name":   s.deviceName(c.ID),
		"type":   c.Type,
		"traits": traits,
		"parentRelations": []map[string]any{{
			"parent":      "enterprises/" + s.o.ProjectID + "/structures/" + structureID + "/rooms/" + d.roomID,
			"displayName": c.Room,
		}},
	}
}

func (s *Sim) deviceName(id string) string {
	return "enterprises/" + s.o.ProjectID + "/devices/" + id
}
