package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is a server the tests run (etcd, kube-apiserver, a Flux controller), with its output in
// a log file. It gets SIGKILL when the test process dies (Pdeathsig), so a panicking test leaves no
// server behind, and runs in its own process group so that Stop reaches its children too.
type Process struct {
	Name string
	// Log is the path of the file holding its stdout and stderr.
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartProcess starts binary with args, logging to <logDir>/<name>.log; env entries are added to
// the test process's environment.
func StartProcess(logDir, name, binary string, env []string, args ...string) (*Process, error) {
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// Exited returns an error with the last log lines when the process has ended, nil while it runs.
func (p *Process) Exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited; last log lines:\n%s", p.Name, Tail(p.Log, 30))
	default:
		return nil
	}
}

// Stop sends SIGTERM to the process group, then SIGKILL after 10 s, and waits for the end.
func (p *Process) Stop() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// StopAll stops processes in reverse start order.
func StopAll(procs []*Process) {
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop()
	}
}

// clockTicks is Linux's USER_HZ, the unit of /proc/PID/stat's times: 100 on every architecture
// Go supports there (the kernel fixes it for user space whatever its internal HZ).
const clockTicks = 100

// CPUTime is the CPU time (user and system) the process has used so far, from /proc (Linux only),
// for benchmarks that must tell the servers' share of a shared machine from the plugin's.
func (p *Process) CPUTime() (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("reading the CPU time of %s: %w", p.Name, err)
	}
	// The command name (field 2) is in parentheses and may hold spaces: count from its end.
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("reading the CPU time of %s: /proc/%d/stat has %d fields", p.Name, p.cmd.Process.Pid, len(fields))
	}
	var ticks int64
	for _, f := range fields[11:13] { // utime and stime, fields 14 and 15
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("reading the CPU time of %s: %w", p.Name, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}
