package core

// Version is the Signet version; release builds set it with
// -ldflags "-X github.com/signet-ci/signet/core.Version=v1.2.3".
var Version = "v0.1.0-dev"
