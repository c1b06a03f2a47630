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
# BenchmarkColdStartWebRTC, BenchmarkLateJoinerFirstIDR[WebRTC]). The relay
# load runs, the daemon and the simulator in processes of their own: the
# scaling table (one RTSP camera read by 10, 50, 100, 200 and 300 readers,
# then 8 cameras × 25 readers; CPU per delivered MB, RSS, GC share, join
# times, with the targets met or missed), then 10 readers of the WebRTC
# camera with its Opus passed through and made AAC by an ffmpeg child.
bench:
	$(GO) test -run '^$$' -bench . -benchmem $$($(GO) list ./internal/... | grep -v /internal/app)
	$(GO) test -run '^$$' -bench 'BenchmarkColdStart|BenchmarkLateJoiner' -benchtime 20x ./internal/app/
	scripts/bench-api.sh -concurrency 16 -duration 10s
	scripts/bench-http.sh -duration 10s
	scripts/bench-socketio.sh
	scripts/bench-scale.sh
	scripts/bench-relay.sh --runs 1 --camera "Living Room" --readers 10 --audio opus
	scripts/bench-relay.sh --runs 1 --camera "Living Room" --readers 10 --audio aac

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecodeRequest -fuzztime 60s ./internal/api/
	$(GO) test -run '^$$' -fuzz FuzzPayloadCheck -fuzztime 60s ./internal/api/

clean:
	rm -rf bin

# Release binaries for Linux on amd64, arm64 and arm/v7: static, stripped,
# stamped with RELEASE and COMMIT, with SHA256SUMS (scripts/release.sh).
RELEASE_DIR     ?= bin/release
RELEASE_TARGETS ?= linux/amd64 linux/arm64 linux/arm/v7

# Installs the daemon as a systemd service: `make build && sudo make
# install`. BINARY may name a release binary instead. The settings file is
# written only if absent, so an upgrade keeps it; the unit is replaced (local
# changes belong in a drop-in: systemctl edit nestmtx).
PREFIX  ?= /usr/local
BINARY  ?= bin/nestmtx
UNITDIR ?= /etc/systemd/system
CONFDIR := /etc/nestmtx

.PHONY: release install

release:
	RELEASE='$(RELEASE)' COMMIT='$(COMMIT)' GO='$(GO)' TARGETS='$(RELEASE_TARGETS)' scripts/release.sh '$(RELEASE_DIR)'

bin/nestmtx:
	$(MAKE) build

install: $(BINARY)
	install -d -m 0755 '$(DESTDIR)$(PREFIX)/bin' '$(DESTDIR)$(UNITDIR)'
	install -m 0755 '$(BINARY)' '$(DESTDIR)$(PREFIX)/bin/nestmtx'
	sed 's|^ExecStart=/usr/local/bin/nestmtx |ExecStart=$(PREFIX)/bin/nestmtx |' deploy/nestmtx.service >'$(DESTDIR)$(UNITDIR)/nestmtx.service.tmp'
	chmod 0644 '$(DESTDIR)$(UNITDIR)/nestmtx.service.tmp'
	mv -f '$(DESTDIR)$(UNITDIR)/nestmtx.service.tmp' '$(DESTDIR)$(UNITDIR)/nestmtx.service'
	install -d -m 0700 '$(DESTDIR)$(CONFDIR)'
	@if [ -e '$(DESTDIR)$(CONFDIR)/nestmtx.env' ]; then \
	  echo 'kept $(DESTDIR)$(CONFDIR)/nestmtx.env (compare it with deploy/nestmtx.env.example)'; \
	else \
	  echo 'install -m 0600 deploy/nestmtx.env.example $(DESTDIR)$(CONFDIR)/nestmtx.env'; \
	  install -m 0600 deploy/nestmtx.env.example '$(DESTDIR)$(CONFDIR)/nestmtx.env'; \
	fi
	@echo
	@echo 'Installed $(PREFIX)/bin/nestmtx and $(UNITDIR)/nestmtx.service. Next:'
	@echo '  1. Settings: $(CONFDIR)/nestmtx.env (NESTMTX_* variables; see the README'"'"'s Configuration).'
	@echo '     Secrets, each optional: a file in $(CONFDIR)/ (admin-password, mqtt-password, metrics-token;'
	@echo '     root'"'"'s, mode 0600), with its NESTMTX_*_FILE line in nestmtx.env uncommented.'
	@echo '  2. sudo systemctl daemon-reload && sudo systemctl enable --now nestmtx'
	@echo '  3. The admin password, unless $(CONFDIR)/admin-password or NESTMTX_ADMIN_PASSWORD gave it:'
	@echo '     sudo cat /var/lib/private/nestmtx/initial-admin-password   (also once in journalctl -u nestmtx)'
	@echo '  Ports: HTTP 2000, RTSP 8554 (RTP/RTCP over UDP 8000-8001), MQTT 1883 (the embedded broker).'
