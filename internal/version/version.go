// Package version says which build of the operator is running. The release build sets
// Version and Commit with -ldflags "-X"; a plain `go build` falls back to what the Go
// toolchain recorded (the module version and VCS revision), so `--version` never lies.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set with -ldflags "-X github.com/credops/cd-credentials-operator/internal/version.Version=v1.2.3".
var (
	// Version is the release, e.g. v0.3.0; "devel" for a local build.
	Version = ""
	// Commit is the git revision the binary was built from.
	Commit = ""
)

// Info is what a binary reports about itself.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Get returns the build information of the running binary.
func Get() Info {
	info := Info{Version: Version, Commit: Commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && info.Commit == "" {
				info.Commit = s.Value
			}
		}
	}
	if info.Version == "" {
		info.Version = "devel"
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	return info
}

// String is the one line `--version` prints: name, version, commit, Go version.
func (i Info) String() string {
	return fmt.Sprintf("version %s, commit %s, %s, %s", i.Version, i.Commit, i.GoVersion, i.Platform)
}
