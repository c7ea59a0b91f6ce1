package server

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestHandlersRecover: a panicking handler is an Internal error for its
// call, logged, not the end of the server.
func TestHandlersRecover(t *testing.T) {
	var logged strings.Builder
	log := hclog.New(&hclog.LoggerOptions{Output: &logged})
	unary := func(ctx context.Context, req any) (any, error) { panic("page 7 is damaged") }
	u, s := recoverUnary(log), recoverStream(log)
	_, err := u(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/nixmox.v1.ControlService/Status"}, unary)
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "internal error in /nixmox.v1.ControlService/Status: page 7 is damaged") {
		t.Errorf("unary: %v", err)
	}
	err = s(nil, nil, &grpc.StreamServerInfo{FullMethod: "/nixmox.v1.AgentService/Connect"}, func(any, grpc.ServerStream) error { panic("boom") })
	if status.Code(err) != codes.Internal {
		t.Errorf("stream: %v", err)
	}
	if !strings.Contains(logged.String(), "a request panicked") || !strings.Contains(logged.String(), "goroutine") {
		t.Errorf("the panic was not logged with its stack:\n%s", logged.String())
	}
}
