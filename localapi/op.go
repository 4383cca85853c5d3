package localapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/trove-p2p/trove/fetch"
	"github.com/trove-p2p/trove/profile"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/manifest"
)

// Op is one operation of the local API: its name (the endpoint is POST
// /v1/<Name>) and the function that runs it on an Env.
type Op[Req, Resp any] struct {
	Name string
	run  func(ctx context.Context, e *Env, req Req, ev func(Event)) (Resp, error)
}

// Local runs o in-process on e. ev (may be nil) sees o's events as they
// happen. The response may be partial when err is set (what was done
// before the error).
func (o Op[Req, Resp]) Local(ctx context.Context, e *Env, req Req, ev func(Event)) (Resp, error) {
	if ev == nil {
		ev = func(Event) {}
	}
	return o.run(ctx, e, req, ev)
}

// Event is one progress event of a long operation; exactly one field is set.
type Event struct {
	// Progress is a sync's progress.
	Progress *fetch.Progress `json:"progress,omitempty"`
	// Imported is a path made valid by an import (import-nix, bundle import).
	Imported *ImportedPath `json:"imported,omitempty"`
	// Unreachable is a peer a short-lived node could not dial.
	Unreachable *Unreachable `json:"unreachable,omitempty"`
	// Resolved is a configuration's manifest a sync resolved.
	Resolved *Resolved `json:"resolved,omitempty"`
	// WaitingFor is the holder of a profile's activation lock that an
	// activation waits for.
	WaitingFor string `json:"waitingFor,omitempty"`
	// Output is output of an activation command or bytes of a bundle
	// written to standard output.
	Output *Output `json:"output,omitempty"`
	// Log is a line of the operation's own log, for the caller's
	// standard error, at the level the caller asked for (Client.logLevel).
	Log string `json:"log,omitempty"`
}

// ImportedPath is one imported store path.
type ImportedPath struct {
	Path    string `json:"path"`
	NarSize uint64 `json:"narSize"`
}

// Unreachable is a peer that could not be dialed.
type Unreachable struct {
	Peer  string `json:"peer"`
	Error string `json:"error"`
}

// Resolved describes a resolved configuration.
type Resolved struct {
	Name       string `json:"name"`
	Generation uint64 `json:"generation"`
	Paths      int    `json:"paths"`
	Publisher  string `json:"publisher"`
}

// Output is bytes for the caller's standard output (Stream 1) or error (2).
type Output struct {
	Stream int    `json:"stream"`
	Data   []byte `json:"data"`
}

// Kinds of error that callers branch on.
const (
	// KindUsage: the request itself is wrong (the CLI exits 2).
	KindUsage = "usage"
	// KindActivation: the profile switched but the activation command
	// failed (sync.ActivationError).
	KindActivation = "activation"
	// KindUnknownManifest: no such configuration or generation here
	// (manifest.ErrUnknown).
	KindUnknownManifest = "unknown-manifest"
	// KindNotRunning: the operation needs a running agent.
	KindNotRunning = "not-running"
)

// Error is an operation's failure as it crosses the socket: a message and
// a kind ("" for any other failure).
type Error struct {
	Kind    string `json:"kind,omitempty"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Is lets errors.Is(err, manifest.ErrUnknown) and the like hold across
// the socket.
func (e *Error) Is(target error) bool {
	switch e.Kind {
	case KindUnknownManifest:
		return target == manifest.ErrUnknown
	case KindNotRunning:
		return target == agent.ErrNoAgent
	}
	return false
}

// UsageError is a request that is wrong in itself.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usagef(format string, a ...any) error { return &UsageError{fmt.Errorf(format, a...)} }

// IsUsage reports whether err says the request was wrong.
func IsUsage(err error) bool {
	var ue *UsageError
	var ae *Error
	return errors.As(err, &ue) || errors.As(err, &ae) && ae.Kind == KindUsage
}

// IsActivationFailure reports whether err says an activation command
// failed after its profile switched.
func IsActivationFailure(err error) bool {
	var ae *profile.ActivationError
	var e *Error
	return errors.As(err, &ae) || errors.As(err, &e) && e.Kind == KindActivation
}

// toError gives err its kind for the wire.
func toError(err error) *Error {
	e := &Error{Message: err.Error()}
	var ae *Error
	switch {
	case errors.As(err, &ae):
		e.Kind = ae.Kind
	case IsUsage(err):
		e.Kind = KindUsage
	case IsActivationFailure(err):
		e.Kind = KindActivation
	case errors.Is(err, manifest.ErrUnknown):
		e.Kind = KindUnknownManifest
	}
	return e
}

// frame is one line of an answer: an event, or the final frame with the
// response and/or the error.
type frame struct {
	Event  *Event          `json:"event,omitempty"`
	Final  bool            `json:"final,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}
