package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
)

// Client is a connection to a daemon's agent socket. Its calls are safe
// for concurrent use; events arrive on Events.
type Client struct {
	nc     net.Conn
	enc    *json.Encoder
	events chan Event

	wmu sync.Mutex // serializes writes

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan Response
	err     error // why the connection ended
	dropped uint64
	done    chan struct{}
}

// Dial connects to the agent socket at path.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connecting to the mlbpf daemon at %s: %w (is 'mlbpf run' running?)", path, err)
	}
	c := &Client{
		nc: nc, enc: json.NewEncoder(nc), events: make(chan Event, 64),
		pending: map[uint64]chan Response{}, done: make(chan struct{}),
	}
	go c.readLoop()
	return c, nil
}

// Events delivers the events of the models subscribed to. It is closed
// when the connection ends. Read it promptly: a client that falls far
// behind is disconnected by the daemon.
func (c *Client) Events() <-chan Event { return c.events }

// Done is closed when the connection ends; Err then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, nil while it is up.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection.
func (c *Client) Close() error {
	err := c.nc.Close()
	<-c.done
	return err
}

func (c *Client) readLoop() {
	sc := bufio.NewScanner(c.nc)
	sc.Buffer(make([]byte, 0, 64<<10), 256<<20)
	var err error
	for sc.Scan() {
		var m Message
		if err = json.Unmarshal(sc.Bytes(), &m); err != nil {
			err = fmt.Errorf("malformed message from the daemon: %w", err)
			break
		}
		if m.Event != nil {
			if m.Event.Type == EventClosing {
				err = errors.New("the daemon is shutting down")
			}
			c.deliver(*m.Event)
			continue
		}
		c.mu.Lock()
		ch := c.pending[m.ID]
		delete(c.pending, m.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- m.Response
		} else if m.Error != "" && m.ID == 0 {
			err = &RemoteError{Op: "connection", Msg: m.Error}
			break
		}
	}
	if err == nil {
		err = sc.Err()
	}
	if err == nil {
		err = ErrClosed
	}
	c.nc.Close()
	c.mu.Lock()
	c.err = err
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	c.mu.Unlock()
	close(c.events)
	close(c.done)
}

// deliver queues an event without ever blocking the read loop (whose
// responses a caller of Fetch may be waiting for): when the queue is full
// the oldest event is dropped, and counted.
func (c *Client) deliver(ev Event) {
	for {
		select {
		case c.events <- ev:
			return
		default:
		}
		select {
		case <-c.events:
			c.mu.Lock()
			c.dropped++
			c.mu.Unlock()
		default:
		}
	}
}

// Dropped returns how many events were dropped because Events was not
// read fast enough.
func (c *Client) Dropped() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

// call sends req and waits for its response.
func (c *Client) call(ctx context.Context, req Request) (Response, error) {
	ch := make(chan Response, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return Response{}, fmt.Errorf("%s: %w", req.Op, err)
	}
	c.nextID++
	req.ID = c.nextID
	c.pending[req.ID] = ch
	c.mu.Unlock()

	c.wmu.Lock()
	err := c.enc.Encode(req)
	c.wmu.Unlock()
	if err != nil {
		c.mu.Lock()
		delete(c.pending, req.ID)
		c.mu.Unlock()
		return Response{}, fmt.Errorf("%s: %w", req.Op, err)
	}
	select {
	case resp, ok := <-ch:
		if !ok {
			return Response{}, fmt.Errorf("%s: %w", req.Op, c.Err())
		}
		if !resp.OK {
			return resp, &RemoteError{Op: req.Op, Msg: resp.Error}
		}
		return resp, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, req.ID)
		c.mu.Unlock()
		return Response{}, fmt.Errorf("%s: %w", req.Op, context.Cause(ctx))
	}
}

// Hello introduces the client as agent and returns the daemon's hello.
func (c *Client) Hello(ctx context.Context, agent string) (Hello, error) {
	resp, err := c.call(ctx, Request{Op: OpHello, Agent: agent})
	if err != nil {
		return Hello{}, err
	}
	if resp.Hello == nil {
		return Hello{}, errors.New("hello: empty answer")
	}
	return *resp.Hello, nil
}

// Models lists the models the daemon runs.
func (c *Client) Models(ctx context.Context) ([]ModelInfo, error) {
	resp, err := c.call(ctx, Request{Op: OpModels})
	return resp.Models, err
}

// Subscribe asks for the model's events: dataset notifications, feedback
// and mode changes.
func (c *Client) Subscribe(ctx context.Context, model string) error {
	_, err := c.call(ctx, Request{Op: OpSubscribe, Model: model})
	return err
}

// Unsubscribe stops the model's events.
func (c *Client) Unsubscribe(ctx context.Context, model string) error {
	_, err := c.call(ctx, Request{Op: OpUnsubscribe, Model: model})
	return err
}

// FetchOptions select what Fetch returns.
type FetchOptions struct {
	// Offset selects a portion; nil: the newest.
	Offset *uint64
	// Records asks for the records decoded as JSON objects, Raw for the
	// raw records.
	Records, Raw bool
}

// Fetch returns a portion of the model's dataset.
func (c *Client) Fetch(ctx context.Context, model string, o FetchOptions) (*Portion, error) {
	resp, err := c.call(ctx, Request{Op: OpFetch, Model: model, Offset: o.Offset, Records: o.Records, Raw: o.Raw})
	if err != nil {
		return nil, err
	}
	if resp.Portion == nil {
		return nil, errors.New("fetch: empty answer")
	}
	return resp.Portion, nil
}

// Discard tells the daemon the client is done with the portion at offset
// (nil: every portion the daemon holds, when not subscribed).
func (c *Client) Discard(ctx context.Context, model string, offset *uint64) error {
	_, err := c.call(ctx, Request{Op: OpDiscard, Model: model, Offset: offset})
	return err
}

// Recommend posts a recommendation; it is validated by the model's
// subsystem exactly as 'mlbpf recommend' is, and returned as applied.
func (c *Client) Recommend(ctx context.Context, rec Recommendation) (Recommendation, error) {
	resp, err := c.call(ctx, Request{Op: OpRecommend, Model: rec.Model, Key: rec.Key, Value: rec.Value, Operator: rec.Operator})
	if err != nil {
		return Recommendation{}, err
	}
	if resp.Recommendation == nil {
		return Recommendation{}, errors.New("recommend: empty answer")
	}
	return *resp.Recommendation, nil
}

// Control carries an operator's command to the daemon, which answers
// once the kernel holds what it asked, or refuses it saying why.
func (c *Client) Control(ctx context.Context, req ControlRequest) (ControlResult, error) {
	resp, err := c.call(ctx, Request{Op: OpControl, Model: req.Model, Action: req.Action, Mode: req.Mode})
	if err != nil {
		return ControlResult{}, err
	}
	if resp.Control == nil {
		return ControlResult{}, errors.New("control: empty answer")
	}
	return *resp.Control, nil
}

// Withdraw takes the recommendation for key back, an operator's or the
// learner's; it returns the key as the subsystem normalized it, once it
// is gone from the kernel's map.
func (c *Client) Withdraw(ctx context.Context, model, key string) (Recommendation, error) {
	resp, err := c.call(ctx, Request{Op: OpWithdraw, Model: model, Key: key, Operator: true})
	if err != nil {
		return Recommendation{}, err
	}
	if resp.Recommendation == nil {
		return Recommendation{}, errors.New("withdraw: empty answer")
	}
	return *resp.Recommendation, nil
}

// Recommendations lists a model's recommendation map.
func (c *Client) Recommendations(ctx context.Context, model string) ([]Entry, error) {
	resp, err := c.call(ctx, Request{Op: OpRecommendations, Model: model})
	if err != nil {
		return nil, err
	}
	if resp.Entries == nil {
		return nil, errors.New("recommendations: empty answer")
	}
	return *resp.Entries, nil
}

// Reload has the daemon re-read its configuration: it answers once every
// change applies, or refuses the whole file saying why.
func (c *Client) Reload(ctx context.Context) (ReloadResult, error) {
	resp, err := c.call(ctx, Request{Op: OpReload})
	if err != nil {
		return ReloadResult{}, err
	}
	if resp.Reload == nil {
		return ReloadResult{}, errors.New("reload: empty answer")
	}
	return *resp.Reload, nil
}

// Shutdown asks the daemon to stop every model and exit, as SIGTERM does.
func (c *Client) Shutdown(ctx context.Context) error {
	_, err := c.call(ctx, Request{Op: OpShutdown})
	return err
}
