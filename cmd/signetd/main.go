// Command signetd is the Signet remote HSM signer.
//
//	signetd serve --config signer.yaml
//	signetd keys create --uri PKCS11-URI --algorithm ecdsa-p256|ecdsa-p384|rsa-3072|ed25519
//	signetd keys list --config signer.yaml
//	signetd audit verify --log FILE
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"

	"github.com/signet-ci/signet/core"
	"github.com/signet-ci/signet/signer"
	"github.com/signet-ci/signet/signer/hsm"
)

const usage = `usage:
  signetd serve --config signer.yaml
  signetd keys create --uri PKCS11-URI --algorithm ecdsa-p256|ecdsa-p384|rsa-3072|ed25519
  signetd keys list --config signer.yaml
  signetd audit verify --log FILE
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(args []string, stdout, stderr io.Writer) int {
	err := dispatch(args, stdout, stderr)
	if err == nil {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) || errors.Is(err, flag.ErrHelp) {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "signetd:", err)
		}
		fmt.Fprint(stderr, usage)
		return 2
	}
	fmt.Fprintln(stderr, "signetd:", err)
	return 1
}

func dispatch(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"missing command"}
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "keys":
		if len(args) < 2 {
			return usageError{"keys: want create or list"}
		}
		switch args[1] {
		case "create":
			return keysCreate(args[2:], stdout, stderr)
		case "list":
			return keysList(args[2:], stdout, stderr)
		}
		return usageError{"keys: unknown subcommand " + args[1]}
	case "audit":
		if len(args) < 2 || args[1] != "verify" {
			return usageError{"audit: want verify"}
		}
		return auditVerify(args[2:], stdout, stderr)
	case "-h", "--help", "help":
		return flag.ErrHelp
	}
	return usageError{"unknown command " + args[0]}
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

func serve(args []string, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	cfgPath := fs.String("config", "", "signer configuration (YAML)")
	jsonLogs := fs.Bool("log-json", false, "log as JSON lines")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *cfgPath == "" {
		return usageError{"serve: --config is required"}
	}
	var h slog.Handler = slog.NewTextHandler(stderr, nil)
	if *jsonLogs {
		h = slog.NewJSONHandler(stderr, nil)
	}
	log := slog.New(h)
	cfg, err := signer.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return signer.Serve(ctx, cfg, log)
}

func keysCreate(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keys create", stderr)
	uri := fs.String("uri", "", "RFC 7512 pkcs11: URI of the new key (token, object=LABEL, module-path, pin-source)")
	alg := fs.String("algorithm", "", "ecdsa-p256 | ecdsa-p384 | rsa-3072 | ed25519")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *uri == "" || *alg == "" {
		return usageError{"keys create: --uri and --algorithm are required"}
	}
	pub, err := hsm.GenerateKey(*uri, *alg)
	if err != nil {
		return err
	}
	pemBytes, err := core.PublicKeyPEM(pub)
	if err != nil {
		return err
	}
	_, err = stdout.Write(pemBytes)
	return err
}

func keysList(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keys list", stderr)
	cfgPath := fs.String("config", "", "signer configuration (YAML)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *cfgPath == "" {
		return usageError{"keys list: --config is required"}
	}
	cfg, err := signer.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b := signer.NewBackends(log, 2)
	defer b.Close()
	keys, err := signer.LoadKeys(context.Background(), log, cfg, b)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tALGORITHM\tPURPOSE\tKEY ID\tEXPIRES")
	for _, k := range keys {
		exp := "-"
		if k.Info.NotAfter != "" {
			exp = k.Info.NotAfter
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.Name, k.Algorithm, k.Purpose, k.KeyID, exp)
	}
	return tw.Flush()
}

func auditVerify(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit verify", stderr)
	logPath := fs.String("log", "", "audit log file")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *logPath == "" {
		return usageError{"audit verify: --log is required"}
	}
	n, err := signer.VerifyAuditLog(*logPath)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d records, hash chain intact\n", *logPath, n)
	return nil
}
