// Package logging builds vbatch's one zap logger and adapts it to the Temporal SDK's
// logger interface, so SDK and vbatch lines share one format and one level.
package logging

import (
	"fmt"

	"go.temporal.io/sdk/log"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a console logger at level ("debug", "info", "warn", "error") on stderr.
func New(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	cfg := zap.NewDevelopmentConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.DisableStacktrace = true
	cfg.EncoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
	return cfg.Build()
}

// Temporal adapts z to the SDK's key-value logger.
func Temporal(z *zap.Logger) log.Logger {
	return &temporalLogger{z: z.WithOptions(zap.AddCallerSkip(1)).Sugar()}
}

type temporalLogger struct{ z *zap.SugaredLogger }

func (l *temporalLogger) Debug(msg string, kv ...any) { l.z.Debugw(msg, kv...) }
func (l *temporalLogger) Info(msg string, kv ...any)  { l.z.Infow(msg, kv...) }
func (l *temporalLogger) Warn(msg string, kv ...any)  { l.z.Warnw(msg, kv...) }
func (l *temporalLogger) Error(msg string, kv ...any) { l.z.Errorw(msg, kv...) }

// With keeps the SDK's per-workflow and per-activity fields on every line.
func (l *temporalLogger) With(kv ...any) log.Logger { return &temporalLogger{z: l.z.With(kv...)} }
