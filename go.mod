module github.com/nestmtx/nestmtx

go 1.26.0

require (
	github.com/bluenviron/gortsplib/v4 v4.16.2
	github.com/bluenviron/mediacommon/v2 v2.4.1
	github.com/eclipse/paho.golang v0.23.0
	github.com/google/uuid v1.6.0
	github.com/gorilla/websocket v1.5.3 // indirect
	github.com/mochi-mqtt/server/v2 v2.7.9
	github.com/pion/logging v0.2.3 // indirect
	github.com/pion/randutil v0.1.0 // indirect
	github.com/pion/rtcp v1.2.15 // indirect
	github.com/pion/rtp v1.8.21
	github.com/pion/sdp/v3 v3.0.15 // indirect
	github.com/pion/srtp/v3 v3.0.6 // indirect
	github.com/pion/transport/v3 v3.0.7 // indirect
	github.com/rs/xid v1.4.0 // indirect
	go.etcd.io/bbolt v1.4.3
	golang.org/x/crypto v0.41.0
	golang.org/x/net v0.43.0 // indirect
	golang.org/x/oauth2 v0.37.0
	golang.org/x/sys v0.35.0 // indirect
	gopkg.in/yaml.v3 v3.0.1
)
