// Package headless drives a headless Chromium, for tests that check what
// a page shows: it loads a local HTML file and returns its DOM after load
// and the messages the page logged to the console (errors, blocked
// loads, uncaught exceptions), and takes its screenshot to a PNG, in one
// run of the browser.
//
// Chromium runs with no network (every host name resolves to nothing)
// and its own throw-away profile; as root it runs without its sandbox,
// which needs user namespaces it does not get here. Find locates it:
// $MLBPF_CHROMIUM, else chromium, chromium-browser or google-chrome on
// PATH (Debian: apt-get install chromium).
package headless
