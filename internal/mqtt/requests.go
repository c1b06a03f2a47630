package mqtt

import (
	"context"
	"encoding/json"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/nestmtx/nestmtx/internal/api"
)

// requestTimeout bounds one request's work, so that a stuck handler frees its
// worker slot and the client still gets an answer.
const requestTimeout = 30 * time.Second

// inbound is a request as it reached the daemon.
type inbound struct {
	p  *paho.Publish
	at time.Time
	// window is the backlog window it was delivered in, nil for a request
	// delivered as it was sent.
	window *backlogWindow
}

// onPublish runs on paho's receive goroutine and never blocks: it queues
// the request for the workers, or, with the queue full, has it answered
// TOO_MANY_REQUESTS. Blocking here used to be the back-pressure, but it
// stopped the daemon acknowledging what the broker delivered, and the
// broker then dropped requests for good once the daemon's queue of
// unacknowledged ones was full: a busy daemon must say so, not lose them.
func (s *Service) onPublish(p *paho.Publish) bool {
	switch p.Topic {
	case s.topics.requests:
	case s.topics.status:
		if w := s.statusWatch.Load(); w != nil {
			select {
			case *w <- p:
			default:
			}
		}
		return true
	default:
		return false
	}
	// Once shutdown began no new goroutine may join the WaitGroup Close
	// waits on.
	if s.ctx.Err() != nil {
		return true
	}
	in := inbound{p: p, at: time.Now(), window: s.window.Load()}
	if p.Properties != nil && len(p.Payload) == 0 {
		if nonce := p.Properties.User.Get(propBacklogEnd); nonce != "" {
			// The daemon's own marker: everything the broker queued
			// while the daemon was away came before it.
			if in.window != nil && in.window.nonceIs(nonce) {
				s.window.CompareAndSwap(in.window, nil)
			}
			return true
		}
	}
	s.pending.Add(1)
	select {
	case s.backlog <- in:
		return true
	default:
	}
	select {
	case s.refusals <- struct{}{}:
		s.wg.Add(1)
		go func() {
			defer func() { <-s.refusals; s.pending.Add(-1); s.wg.Done() }()
			s.serveRequest(in, true)
		}()
	default:
		// Refusals pile up too: the last resort is to let this one go,
		// and say so (at most once a minute).
		s.pending.Add(-1)
		s.dropped.Add(1)
		if now := time.Now(); now.Sub(s.lastDropLog.Load().(time.Time)) > time.Minute {
			s.lastDropLog.Store(now)
			s.log.Warn("MQTT requests dropped: the request queue and the busy answers are full", "dropped_so_far", s.dropped.Load())
		}
	}
	return true
}

// work serves queued requests until shutdown.
func (s *Service) work() {
	defer s.wg.Done()
	for {
		select {
		case in := <-s.backlog:
			s.serveRequest(in, false)
			s.pending.Add(-1)
		case <-s.ctx.Done():
			return
		}
	}
}

// replyTo is where a response goes and what it must carry back.
type replyTo struct {
	topic       string
	correlation []byte
	qos         byte
	// recipient is the login that sent the request: on the embedded
	// broker, the only one the reply is delivered to.
	recipient string
	// window: the request came with the broker's backlog (backlog.go).
	window *backlogWindow
}

// serveRequest answers one request, or with busy set refuses it with
// TOO_MANY_REQUESTS at the reply address it asked for.
func (s *Service) serveRequest(in inbound, busy bool) {
	p := in.p
	var props paho.PublishProperties
	if p.Properties != nil {
		props = *p.Properties
	}
	reply := replyTo{correlation: props.CorrelationData, qos: min(p.QoS, 1), window: in.window}
	remote, client := "", ""
	if s.broker != nil {
		// Set by our own broker, which overwrites what clients send.
		from := parseSender(props.User.Get(propSender))
		reply.recipient, remote, client = from.account, from.ip, from.client
	}
	badReplyTopic := props.ResponseTopic != "" && !s.topics.rules.validReplyTopic(props.ResponseTopic)
	if props.ResponseTopic != "" && !badReplyTopic {
		reply.topic = props.ResponseTopic
	}

	if len(p.Payload) > s.opts.MaxRequestBytes {
		if reply.topic == "" {
			reply.topic = s.addressByRequestID(api.ScanRequestID(p.Payload))
		}
		err := api.NewError(api.CodePayloadTooLarge, "the request is %d bytes; the limit is %d", len(p.Payload), s.opts.MaxRequestBytes)
		s.respond(reply, nil, err)
		return
	}

	req, decErr := api.DecodeRequest(p.Payload)
	if reply.topic == "" {
		reply.topic = s.addressByRequestID(req.RequestID)
	}
	if decErr != nil {
		s.respond(reply, nil, decErr.WithContext(req))
		return
	}
	if badReplyTopic {
		err := api.Invalid(api.FieldError{Path: "responseTopic",
			Message: "must be a valid topic outside the daemon's own (" + s.topics.ownReplies() + " are fine)"})
		s.respond(reply, nil, err.WithContext(req))
		return
	}
	req.Remote, req.Client = remote, client
	if msg := s.expired(in, props); msg != "" {
		s.respond(reply, nil, api.NewError(api.CodeBadRequest, "%s", msg).WithContext(req))
		return
	}
	if busy {
		err := api.NewError(api.CodeTooManyRequests, "the daemon is busy: %d requests are waiting; try again in a moment", len(s.backlog))
		s.respond(reply, nil, err.WithContext(req))
		return
	}
	if reply.topic == s.topics.failures {
		err := api.Invalid(api.FieldError{Path: "requestId",
			Message: "is required when the request has no MQTT v5 Response Topic"})
		s.respond(reply, nil, err.WithContext(req))
		return
	}
	if req.Token == "" {
		req.Token = api.BearerFromHeader(props.User.Get("authorization"))
		if req.Token == "" {
			req.Token = api.BearerFromHeader(props.User.Get("Authorization"))
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, requestTimeout)
	res, apiErr := s.handler.Handle(ctx, req)
	cancel()
	s.respond(reply, res, apiErr)
}

// addressByRequestID is the contract's fallback reply topic: per request id,
// or the failures topic when the request cannot be matched to anyone.
func (s *Service) addressByRequestID(id string) string {
	if id == "" {
		return s.topics.failures
	}
	return s.topics.response(id)
}

func (s *Service) respond(r replyTo, result any, apiErr *api.Error) {
	status := "ok"
	var body []byte
	var err error
	if apiErr != nil {
		status = "error"
		body, err = json.Marshal(apiErr)
	} else {
		body, err = api.MarshalResult(result)
	}
	if err != nil {
		s.log.Error("encoding a response", "error", err)
		status = "error"
		body, _ = json.Marshal(api.NewError(api.CodeInternal, "the response could not be encoded"))
	}
	user := paho.UserProperties{{Key: "status", Value: status}}
	if s.broker != nil {
		// Without a recipient the broker delivers the reply to nobody.
		user = append(user, paho.UserProperty{Key: propRecipient, Value: r.recipient})
	}
	pub := &paho.Publish{Topic: r.topic, QoS: r.qos, Payload: body, Properties: &paho.PublishProperties{
		ContentType:     "application/json",
		CorrelationData: r.correlation,
		User:            user,
	}}
	// The reply waits for the broker if it is away (and is resent if the
	// session is lost before the broker acknowledged it), for as long as a
	// request may wait, a minute at least.
	ctx, cancel := context.WithTimeout(s.ctx, max(s.opts.RequestMaxAge, time.Minute))
	defer cancel()
	if r.window != nil {
		r.window.awaitMarker(ctx)
	}
	if err := s.send(ctx, pub, true); err != nil && s.ctx.Err() == nil {
		s.log.Warn("could not publish a response", "topic", r.topic, "error", err)
	}
}
