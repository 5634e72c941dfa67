package approval

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Webhook is one notification endpoint from the policy.
type Webhook struct {
	Name string
	URL  string
	// Secret, if set, signs every delivery (SignatureHeader). It is never logged.
	Secret string
	// Rules limits the endpoint to requests from these rules; empty means all.
	Rules []string
}

// Headers of a webhook delivery. The signature is "v1=" + hex HMAC-SHA256(secret, timestamp + "." +
// body), so a receiver can check both origin and freshness.
const (
	SignatureHeader = "X-Enforcer-Signature"
	TimestampHeader = "X-Enforcer-Timestamp"
	DeliveryHeader  = "X-Enforcer-Delivery"
)

// Sign returns the SignatureHeader value for body sent at timestamp (Unix seconds).
func Sign(secret []byte, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1=" + hex.EncodeToString(m.Sum(nil))
}

// NotifierConfig tunes delivery. Zero fields take defaults.
type NotifierConfig struct {
	Webhooks    []Webhook
	QueueSize   int           // per endpoint, all persons together, default 256
	MaxAttempts int           // default 6
	Backoff     time.Duration // first retry delay, doubled each time; default 500 ms
	MaxBackoff  time.Duration // default 30 s
	Timeout     time.Duration // per attempt, default 5 s
	Client      *http.Client
	Logger      *slog.Logger
}

// Notifier posts events to webhooks from background workers, one per endpoint, with retries and
// exponential backoff. Notify never blocks: when an endpoint's queue is full an event is dropped,
// counted and logged. Each endpoint queues events by person (the requester) and delivers them in
// turn, one person's after another's, and a full queue drops from the person with the most
// queued: an agent that makes requests as fast as it may delays and crowds out only its own.
type Notifier struct {
	cfg       NotifierConfig
	log       *slog.Logger
	endpoints []*endpoint
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	delivered, retries, failed, dropped atomic.Uint64
}

type endpoint struct {
	hook     Webhook
	capacity int
	ready    chan struct{} // signalled when a delivery is queued
	lastDrop atomic.Int64  // unix nanos of the last drop log line

	mu     sync.Mutex
	queued map[string][]delivery // by person
	turns  []string              // persons with queued deliveries, next to deliver first
	count  int
}

type delivery struct {
	id   string
	body []byte
}

// push queues d for person. When the queue is full it drops the newest delivery of the person
// with the most queued, d itself when that is person (or a tie), and returns whose it dropped.
func (ep *endpoint) push(person string, d delivery) (dropped string, full bool) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.count >= ep.capacity {
		victim, most := person, len(ep.queued[person])+1
		for p, q := range ep.queued {
			if len(q) > most {
				victim, most = p, len(q)
			}
		}
		if victim == person {
			return person, true
		}
		q := ep.queued[victim]
		q[len(q)-1] = delivery{}
		ep.queued[victim] = q[:len(q)-1]
		ep.count--
		dropped, full = victim, true
	}
	if len(ep.queued[person]) == 0 {
		ep.turns = append(ep.turns, person)
	}
	ep.queued[person] = append(ep.queued[person], d)
	ep.count++
	select {
	case ep.ready <- struct{}{}:
	default:
	}
	return dropped, full
}

// pop takes the next delivery: the oldest of the person whose turn it is, who then goes to the
// back of the line if more of theirs wait.
func (ep *endpoint) pop() (delivery, bool) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if len(ep.turns) == 0 {
		return delivery{}, false
	}
	person := ep.turns[0]
	ep.turns = ep.turns[1:]
	q := ep.queued[person]
	d := q[0]
	q[0] = delivery{}
	if q = q[1:]; len(q) == 0 {
		delete(ep.queued, person)
	} else {
		ep.queued[person] = q
		ep.turns = append(ep.turns, person)
	}
	ep.count--
	return d, true
}

// eventPerson is whose event ev is, for the queues' turns: the requester's.
func eventPerson(ev Event) string {
	switch {
	case ev.Request != nil:
		return pendingKey(ev.Request.Identity)
	case ev.Grant != nil:
		return ev.Grant.Subject
	}
	return ""
}

// NotifierStats counts deliveries.
type NotifierStats struct {
	Delivered, Retries, Failed, Dropped uint64
}

// Payload is the JSON body of a delivery. Text is Slack-compatible (an incoming-webhook URL can be
// used directly); the rest is for programs.
type Payload struct {
	Text     string    `json:"text"`
	Event    EventType `json:"event"`
	Time     time.Time `json:"time"`
	Request  *Request  `json:"request,omitempty"`
	Decision *Decision `json:"decision,omitempty"`
	Grant    *Grant    `json:"grant,omitempty"`
}

// NewNotifier checks the endpoints and starts one worker per endpoint. Close stops them.
func NewNotifier(cfg NotifierConfig) (*Notifier, error) {
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 256
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 6
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	// Deliveries go only to the URL the operator wrote: a redirect (from the endpoint or from
	// whoever answers for its name) would post held statements and identities to a host, or over a
	// scheme, nobody chose. A 3xx is then a permanent failure.
	client := &http.Client{}
	if cfg.Client != nil {
		c := *cfg.Client
		client = &c
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cfg.Client = client
	n := &Notifier{cfg: cfg, log: cfg.Logger}
	if n.log == nil {
		n.log = slog.Default()
	}
	for i, h := range cfg.Webhooks {
		u, err := url.Parse(h.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// The URL itself may carry a token (Slack's do): name the endpoint, not the URL.
			return nil, fmt.Errorf("approval webhook %d (%s): URL must be http(s)://host/…", i, h.Name)
		}
		n.endpoints = append(n.endpoints, &endpoint{hook: h, capacity: cfg.QueueSize, ready: make(chan struct{}, 1), queued: map[string][]delivery{}})
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	for _, ep := range n.endpoints {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.run(ctx, ep)
		}()
	}
	return n, nil
}

// Notify queues ev for every endpoint that wants it and returns how many deliveries it dropped
// from full queues (ev's or another of its person's). It never blocks.
func (n *Notifier) Notify(ev Event) (dropped int) {
	switch ev.Type {
	case EventCreated, EventDecided, EventGranted, EventExpired:
	default:
		return 0
	}
	if ev.Remote {
		return 0 // the daemon that made the change notifies
	}
	person := eventPerson(ev)
	var body []byte
	for _, ep := range n.endpoints {
		if len(ep.hook.Rules) > 0 && (ev.Request == nil || !slices.Contains(ep.hook.Rules, ev.Request.Rule)) {
			continue
		}
		if body == nil {
			var err error
			body, err = json.Marshal(Payload{Text: Summary(ev), Event: ev.Type, Time: ev.Time, Request: ev.Request, Decision: ev.Decision, Grant: ev.Grant})
			if err != nil {
				n.log.Error("approval webhook: encode payload", "err", err)
				return dropped
			}
		}
		victim, full := ep.push(person, delivery{id: NewID()[len(idPrefix):], body: body})
		if !full {
			continue
		}
		dropped++
		total := n.dropped.Add(1)
		now := time.Now().UnixNano()
		if last := ep.lastDrop.Load(); now-last > int64(10*time.Second) && ep.lastDrop.CompareAndSwap(last, now) {
			n.log.Warn("approval webhook: queue full, dropping notifications of the person with the most queued",
				"webhook", ep.hook.Name, "person", victim, "queue", n.cfg.QueueSize, "dropped_total", total)
		}
	}
	return dropped
}

// Stats returns the delivery counters.
func (n *Notifier) Stats() NotifierStats {
	return NotifierStats{Delivered: n.delivered.Load(), Retries: n.retries.Load(), Failed: n.failed.Load(), Dropped: n.dropped.Load()}
}

// Close stops the workers; queued deliveries are abandoned.
func (n *Notifier) Close() error {
	n.cancel()
	n.wg.Wait()
	return nil
}

func (n *Notifier) run(ctx context.Context, ep *endpoint) {
	for ctx.Err() == nil {
		d, ok := ep.pop()
		if !ok {
			select {
			case <-ctx.Done():
			case <-ep.ready:
			}
			continue
		}
		n.deliver(ctx, ep, d)
	}
}

// errPermanent marks answers a retry cannot fix (4xx other than 408 and 429).
var errPermanent = errors.New("permanent failure")

func (n *Notifier) deliver(ctx context.Context, ep *endpoint, d delivery) {
	delay := n.cfg.Backoff
	for attempt := 1; ; attempt++ {
		err := n.post(ctx, ep.hook, d)
		if err == nil {
			n.delivered.Add(1)
			return
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errPermanent) || attempt >= n.cfg.MaxAttempts {
			n.failed.Add(1)
			n.log.Warn("approval webhook: giving up", "webhook", ep.hook.Name, "attempts", attempt, "err", err)
			return
		}
		n.retries.Add(1)
		// Jitter (±25 %) keeps many daemons from retrying against one endpoint in lockstep.
		wait := delay/4*3 + rand.N(delay/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		delay = min(delay*2, n.cfg.MaxBackoff)
	}
}

func (n *Notifier) post(ctx context.Context, h Webhook, d delivery) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(d.body))
	if err != nil {
		return fmt.Errorf("%w: %v", errPermanent, err)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "enforcer-approval")
	req.Header.Set(TimestampHeader, ts)
	req.Header.Set(DeliveryHeader, d.id)
	if h.Secret != "" {
		req.Header.Set(SignatureHeader, Sign([]byte(h.Secret), ts, d.body))
	}
	resp, err := n.cfg.Client.Do(req)
	if err != nil {
		// url.Error repeats the URL, which may hold a token; keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("post: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return fmt.Errorf("%w: status %d", errPermanent, resp.StatusCode)
}
