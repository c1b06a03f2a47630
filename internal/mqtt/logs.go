package mqtt

import (
	"context"
	"encoding/json"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/nestmtx/nestmtx/internal/logstream"
)

// PublishLogs publishes the records of sub on B/logs/<level name> (QoS 0,
// not retained) until the service closes: a live log for whoever may read
// it (the embedded broker lets only admins; docs/mqtt-api.md §6). Lines
// that come while the broker is away are dropped, as QoS 0 is, and this
// loop logs nothing itself: a line about a log line would feed itself.
func (s *Service) PublishLogs(sub *logstream.Subscription) {
	go func() {
		defer sub.Close()
		for {
			select {
			case <-s.ctx.Done():
				return
			case r := <-sub.C():
				if !s.connected.Load() {
					s.logsDropped.Add(1)
					continue
				}
				payload, err := json.Marshal(r)
				if err != nil {
					s.logsDropped.Add(1)
					continue
				}
				ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
				err = s.send(ctx, &paho.Publish{Topic: s.topics.logs(r.LevelName()), QoS: 0, Payload: payload}, false)
				cancel()
				if err != nil {
					s.logsDropped.Add(1)
				}
			}
		}
	}()
}

// LogsDropped counts the log lines not published (broker away, a failed
// publish); the subscription's own Dropped counts those it could not
// keep up with.
func (s *Service) LogsDropped() uint64 { return s.logsDropped.Load() }
