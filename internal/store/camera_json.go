package store

import "encoding/json"

// cameraJSON is Camera without its methods, to marshal the default way.
type cameraJSON Camera

// MarshalJSON writes an unconfigured MTXPath as null rather than "", and nil
// lists as [], which is what API clients can test for most simply.
func (c Camera) MarshalJSON() ([]byte, error) {
	var path *string
	if c.MTXPath != "" {
		path = &c.MTXPath
	}
	c.Protocols = nonNil(c.Protocols)
	c.CodecsVideo = nonNil(c.CodecsVideo)
	c.CodecsAudio = nonNil(c.CodecsAudio)
	// The outer MTXPath shadows the embedded one, being less deeply nested.
	return json.Marshal(struct {
		cameraJSON
		MTXPath *string `json:"mtx_path"`
	}{cameraJSON(c), path})
}

// UnmarshalJSON accepts null for mtx_path, the inverse of MarshalJSON.
func (c *Camera) UnmarshalJSON(data []byte) error {
	var v struct {
		*cameraJSON
		MTXPath *string `json:"mtx_path"`
	}
	v.cameraJSON = (*cameraJSON)(c)
	if c.MTXPath != "" { // like encoding/json, leave the field alone if absent
		p := c.MTXPath
		v.MTXPath = &p
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	c.MTXPath = ""
	if v.MTXPath != nil {
		c.MTXPath = *v.MTXPath
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
