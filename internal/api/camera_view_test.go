package api

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/nestmtx/nestmtx/internal/store"
)

// The API's camera: an unconfigured path and the default audio mode are
// null and lists are [], in NestMTX's field names.
func TestCameraView(t *testing.T) {
	c := store.Camera{ID: 1, UID: "enterprises/p/devices/a", Type: "sdm.devices.types.CAMERA"}
	js, err := json.Marshal(viewCamera(c))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"mtx_path":null`, `"protocols":[]`, `"identified_as":"sdm.devices.types.CAMERA"`,
		`"codecs_audio":[]`, `"codecs_video":[]`, `"uid":"enterprises/p/devices/a"`, `"audio":null`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("%s missing from %s", want, js)
		}
	}
	c.Path = "door"
	c.Protocols = []string{"RTSP"}
	c.Audio = "aac"
	js, _ = json.Marshal(viewCamera(c))
	if !strings.Contains(string(js), `"mtx_path":"door"`) || !strings.Contains(string(js), `"protocols":["RTSP"]`) ||
		!strings.Contains(string(js), `"audio":"aac"`) {
		t.Errorf("configured camera: %s", js)
	}
}
