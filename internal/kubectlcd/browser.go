package kubectlcd

import (
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/term"
)

// openBrowser opens url with the platform's opener. The URL is one argument of a
// program run directly, never a shell command line, so nothing in it is interpreted.
func openBrowser(url string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", url)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", url)
	default:
		cmd = exec.Command("xdg-open", url)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	// Reap it in the background; openers return at once or hand over to the browser.
	go func() { _ = cmd.Wait() }()
	return nil
}

// isTerminalFile reports whether s is an *os.File connected to a terminal.
func isTerminalFile(s any) bool {
	f, ok := s.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
