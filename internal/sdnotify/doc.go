// Package sdnotify tells systemd about the daemon's state: the
// sd_notify(3) protocol, one datagram on the socket $NOTIFY_SOCKET names,
// for a service of Type=notify: READY=1 once every model runs and the
// socket listens, RELOADING=1 while a reload is applied, STOPPING=1 when
// the daemon stops its models.
package sdnotify
