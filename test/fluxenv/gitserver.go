package fluxenv

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// GitServer serves the bare repositories under Root over Git's smart HTTP protocol on 127.0.0.1,
// by running `git http-backend` as a CGI program, with HTTP basic auth.
type GitServer struct {
	// URL is http://127.0.0.1:PORT; a repository named NAME is at URL/NAME.git.
	URL string
	// Root holds the bare repositories.
	Root string
	// Username and Password are the basic-auth credentials the server requires (what
	// `flux bootstrap --token-auth` stores in the flux-system secret).
	Username, Password string

	home string
}

// StartGitServer starts a Git server with fresh random credentials; it stops when the test ends.
func StartGitServer(t testing.TB) *GitServer {
	t.Helper()
	gitPath, err := exec.LookPath("git")
	if err != nil {
		t.Fatalf("git is required to serve fleet repositories: %v", err)
	}
	out, err := exec.Command(gitPath, "--exec-path").Output()
	if err != nil {
		t.Fatalf("git --exec-path: %v", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	secret := make([]byte, 12)
	_, _ = rand.Read(secret)
	dir := t.TempDir()
	g := &GitServer{
		Root:     filepath.Join(dir, "repositories"),
		Username: "flux",
		Password: hex.EncodeToString(secret),
		home:     filepath.Join(dir, "home"),
	}
	for _, d := range []string{g.Root, g.home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	handler := &cgi.Handler{
		Path: backend,
		Root: "/",
		Env: []string{
			"GIT_PROJECT_ROOT=" + g.Root,
			"GIT_HTTP_EXPORT_ALL=1",
			// Keep the backend away from the caller's ~/.gitconfig and the system configuration.
			"HOME=" + g.home, "GIT_CONFIG_NOSYSTEM=1",
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(g.Username)) != 1 ||
			subtle.ConstantTimeCompare([]byte(p), []byte(g.Password)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		handler.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	g.URL = srv.URL
	return g
}

// Repo is a bare repository on a GitServer with a local work tree (a clone) to edit and push from.
type Repo struct {
	// Name is the repository name; URL its clone URL without credentials (what the GitRepository
	// points at).
	Name, URL string
	// Dir is the work tree.
	Dir string
	// Branch is the branch pushed to (main).
	Branch string

	server *GitServer
}

// CreateRepo creates an empty bare repository NAME.git and a work tree on branch main. The first
// CommitAndPush creates the branch on the server.
func (g *GitServer) CreateRepo(t testing.TB, name string) *Repo {
	t.Helper()
	bare := filepath.Join(g.Root, name+".git")
	r := &Repo{Name: name, URL: g.URL + "/" + name + ".git", Dir: filepath.Join(t.TempDir(), name), Branch: "main", server: g}
	r.git(t, g.Root, "init", "--quiet", "--bare", "--initial-branch=main", bare)
	r.git(t, bare, "config", "http.receivepack", "true")
	r.git(t, "", "init", "--quiet", "--initial-branch=main", r.Dir)
	r.Git(t, "remote", "add", "origin", r.pushURL())
	return r
}

// pushURL carries the credentials, so that the work tree needs no credential helper.
func (r *Repo) pushURL() string {
	u, _ := url.Parse(r.URL)
	u.User = url.UserPassword(r.server.Username, r.server.Password)
	return u.String()
}

// gitEnv isolates git from the machine's configuration and fixes the author, so commits do not
// depend on who runs the tests.
func (g *GitServer) gitEnv() []string {
	return append(os.Environ(),
		"HOME="+g.home, "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=fluxenv", "GIT_AUTHOR_EMAIL=fluxenv@example.invalid",
		"GIT_COMMITTER_NAME=fluxenv", "GIT_COMMITTER_EMAIL=fluxenv@example.invalid",
	)
}

func (r *Repo) git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out, err := r.run(dir, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (r *Repo) run(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = r.server.gitEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// Git runs git in the work tree and returns its trimmed standard output.
func (r *Repo) Git(t testing.TB, args ...string) string {
	t.Helper()
	return r.git(t, r.Dir, args...)
}

// WriteFile writes a file of the work tree (path relative to it), creating its directories.
func (r *Repo) WriteFile(t testing.TB, path, content string) {
	t.Helper()
	full := filepath.Join(r.Dir, filepath.FromSlash(path))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// ReadFile reads a file of the work tree.
func (r *Repo) ReadFile(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(r.Dir, filepath.FromSlash(path)))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// Remove deletes a file or directory of the work tree (the next CommitAndPush records it).
func (r *Repo) Remove(t testing.TB, path string) {
	t.Helper()
	if err := os.RemoveAll(filepath.Join(r.Dir, filepath.FromSlash(path))); err != nil {
		t.Fatal(err)
	}
}

// CommitAndPush commits every change of the work tree and pushes the branch; it returns the commit.
func (r *Repo) CommitAndPush(t testing.TB, message string) string {
	t.Helper()
	r.Git(t, "add", "--all")
	r.Git(t, "commit", "--quiet", "--allow-empty", "--message", message)
	r.Git(t, "push", "--quiet", "origin", "HEAD:refs/heads/"+r.Branch)
	return r.Head(t)
}

// Tag creates (or moves) an annotated tag at HEAD and pushes it.
func (r *Repo) Tag(t testing.TB, tag string) {
	t.Helper()
	r.Git(t, "tag", "--force", "--annotate", "--message", tag, tag)
	r.Git(t, "push", "--quiet", "--force", "origin", "refs/tags/"+tag)
}

// Pull makes the work tree the server's branch (e.g. after `flux bootstrap` pushed commits).
func (r *Repo) Pull(t testing.TB) string {
	t.Helper()
	r.Git(t, "fetch", "--quiet", "origin", r.Branch)
	r.Git(t, "reset", "--quiet", "--hard", "FETCH_HEAD")
	return r.Head(t)
}

// Head returns the work tree's HEAD commit.
func (r *Repo) Head(t testing.TB) string {
	t.Helper()
	return r.Git(t, "rev-parse", "HEAD")
}
