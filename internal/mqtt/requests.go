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

// onPublish runs on paho's receive goroutine. It only hands the message to a
// worker; blocking here when every worker is busy slows the broker's delivery
// to us, which is the back-pressure we want.
func (s *Service) onPublish(p *paho.Publish) bool {
	if p.Topic != s.topics.requests {
		return false
	}
	// Once shutdown began no new worker may join the WaitGroup Close waits on.
	if s.ctx.Err() != nil {
		return true
	}
	select {
	case s.workers <- struct{}{}:
	case <-s.ctx.Done():
		return true
	}
	s.wg.Add(1)
	go func() {
		defer func() { <-s.workers; s.wg.Done() }()
		s.serve(p)
	}()
	return true
}

// replyTo is where a response goes and what it must carry back.
type replyTo struct {
	topic       string
	correlation []byte
	qos         byte
	// recipient is the login that sent the request: on the embedded
	// broker, the only one the reply is delivered to.
	recipient string
}

func (s *Service) serve(p *paho.Publish) {
	var props paho.PublishProperties
	if p.Properties != nil {
		props = *p.Properties
	}
	reply := replyTo{correlation: props.CorrelationData, qos: min(p.QoS, 1)}
	remote, client := "", ""
	if s.broker != nil {
		// Set by our own broker, which overwrites what clients send.
		reply.recipient = props.User.Get(propAccount)
		remote, client = props.User.Get(propRemote), props.User.Get(propClient)
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
			Message: "must be a valid topic outside the daemon's own (" + s.topics.base + "/responses/… and " + s.topics.base + "/replies/<username>/… are fine)"})
		s.respond(reply, nil, err.WithContext(req))
		return
	}
	req.Remote, req.Client = remote, client
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
	return s.topics.responses + id
}

func (s *Service) respond(r replyTo, result any, apiErr *api.Error) {
	status := "ok"
	var body []byte
	var err error
	if apiErr != nil {
		status = "error"
		body, err = json.Marshal(apiErr)
	} else {
		body, err = json.Marshal(result)
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
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	if err := s.publish(ctx, pub); err != nil && s.ctx.Err() == nil {
		s.log.Warn("could not publish a response", "topic", r.topic, "error", err)
	}
}
