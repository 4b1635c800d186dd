package testenv

import (
	"os"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// Main is a TestMain for packages that talk to a test API server: it silences controller-runtime's
// warning (with a stack trace) that its logger is unset and client-go's klog lines (e.g. about the
// connections a fault test cuts), then runs the tests.
func Main(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	klog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}
