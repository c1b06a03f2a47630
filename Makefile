# The README's commands, as make targets.
GO      ?= go
RELEASE ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.release=$(RELEASE) -X main.commit=$(COMMIT)

.PHONY: build run test bench fuzz clean

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/nestmtx ./cmd/nestmtx
	$(GO) build -trimpath -o bin/nestmtx-load ./cmd/nestmtx-load

# Every listener needs a login: say which one before the daemon's log starts.
run: build
	@echo "Log in as admin with NESTMTX_ADMIN_PASSWORD (or the password a first start without it prints), e.g.:"
	@echo "  ffprobe -rtsp_transport tcp 'rtsp://admin:PASSWORD@127.0.0.1:8554/front-door'"
	@echo "  mosquitto_sub -h 127.0.0.1 -u admin -P PASSWORD -t 'nestmtx/#' -v"
	bin/nestmtx serve --demo

# The whole suite as CI runs it: installs what the tests need first.
test:
	scripts/test.sh

# The latency benchmarks cover RTSP and WebRTC cameras (BenchmarkColdStart,
# BenchmarkColdStartWebRTC, BenchmarkLateJoinerFirstIDR[WebRTC]); the relay
# load runs are 50 readers of the RTSP camera, then 10 of the WebRTC one
# with its Opus passed through and made AAC by an ffmpeg child.
bench:
	$(GO) test -run '^$$' -bench . -benchmem $$($(GO) list ./internal/... | grep -v /internal/app)
	$(GO) test -run '^$$' -bench 'BenchmarkColdStart|BenchmarkLateJoiner' -benchtime 20x ./internal/app/
	scripts/bench-api.sh -concurrency 16 -duration 10s
	scripts/bench-http.sh -duration 10s
	scripts/bench-socketio.sh
	scripts/bench-relay.sh --runs 3
	scripts/bench-relay.sh --runs 1 --camera "Living Room" --readers 10 --audio opus
	scripts/bench-relay.sh --runs 1 --camera "Living Room" --readers 10 --audio aac

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecodeRequest -fuzztime 60s ./internal/api/
	$(GO) test -run '^$$' -fuzz FuzzPayloadCheck -fuzztime 60s ./internal/api/

clean:
	rm -rf bin
