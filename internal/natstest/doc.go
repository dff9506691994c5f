// Package natstest runs a real nats-server with JetStream for tests and
// benchmarks: on a loopback port, with its store in a temporary
// directory, stopped and started again at will.
package natstest
