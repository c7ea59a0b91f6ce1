package server

import (
	"context"
	"runtime/debug"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// recovering makes a panic in any handler — a read of a damaged record,
// a bug — an Internal error for that call, logged with its stack, instead
// of the end of the server.
func recovering(log hclog.Logger) []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(recoverUnary(log)), grpc.ChainStreamInterceptor(recoverStream(log))}
}

func caught(log hclog.Logger, method string, err *error) {
	if r := recover(); r != nil {
		log.Error("a request panicked; answered with an internal error", "method", method, "panic", r, "stack", string(debug.Stack()))
		*err = status.Errorf(codes.Internal, "internal error in %s: %v (the server's log has the details)", method, r)
	}
}

func recoverUnary(log hclog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		defer caught(log, info.FullMethod, &err)
		return h(ctx, req)
	}
}

func recoverStream(log hclog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
		defer caught(log, info.FullMethod, &err)
		return h(srv, ss)
	}
}
