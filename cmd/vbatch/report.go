package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/report"
	"github.com/vbatch/vbatch/internal/run"
)

type reportOptions struct {
	format     string
	out        string
	output     string
	fromJSON   string
	regenerate bool
	previous   string
	notes      []string
}

func (a *app) reportCmd() *cobra.Command {
	var o reportOptions
	cmd := &cobra.Command{
		Use:   "report [RUN]",
		Short: "Print or save a run's report (Markdown, JSON or HTML), or measure it again",
		Long: `Prints the report of RUN, rendered from its report.json. RUN is a run id (looked up in Temporal, or under --output), the
run's folder URI (s3://bucket/prefix/RUN) or its report.json URI.

  --format md|json|html   print that rendering (default md); --out PATH writes it to a file
                          (md also writes the charts it links, into charts/ beside it)
  --format all --out DIR  write report.json, report.md, report.html and charts/*.svg into DIR
  --regenerate            measure the run's folder again (output.jsonl, errors.jsonl, chunk
                          attempts) and publish report.json/md/html and the charts there
  --previous RUN2         compare with RUN2 instead of the previous run of the series
  --from-json FILE        render a report.json without its run's folder (what it did not
                          record says "not recorded")`,
		Args: func(cmd *cobra.Command, args []string) error {
			if o.fromJSON != "" {
				return cobra.NoArgs(cmd, args)
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			runArg := ""
			if len(args) > 0 {
				runArg = args[0]
			}
			return a.report(cmd.Context(), cmd.OutOrStdout(), runArg, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.format, "format", "md", "md, json, html, or all (with --out DIR)")
	f.StringVar(&o.out, "out", "", "write to this file (a folder with --format all) instead of stdout")
	f.StringVar(&o.output, "output", "", "the output prefix the run's folder is under, to find RUN without Temporal")
	f.StringVar(&o.fromJSON, "from-json", "", "render this report.json (a path or URI) instead of a run's")
	f.BoolVar(&o.regenerate, "regenerate", false, "measure the run's folder again and publish the report there")
	f.StringVar(&o.previous, "previous", "", "compare with this run (id or folder URI) instead of the previous run of the series")
	f.StringArrayVar(&o.notes, "note", nil, "a note to print under the title (repeatable)")
	return cmd
}

func (a *app) report(ctx context.Context, out io.Writer, runArg string, o reportOptions) error {
	switch o.format {
	case "md", "json", "html":
	case "all":
		if o.out == "" {
			return errors.New("--format all writes several files: name a folder with --out")
		}
	default:
		return fmt.Errorf("--format %q: want md, json, html or all", o.format)
	}
	if o.fromJSON != "" && (o.regenerate || o.previous != "") {
		return errors.New("--from-json renders a report.json alone: it cannot --regenerate or compare with --previous")
	}
	store, err := a.store(ctx)
	if err != nil {
		return err
	}
	var (
		r      report.Report
		layout run.Layout
	)
	switch {
	case o.fromJSON != "":
		r, err = readReport(ctx, store, localURI(o.fromJSON))
	default:
		if layout, err = a.locateRun(ctx, store, runArg, o.output); err != nil {
			return err
		}
		if o.regenerate {
			r, err = report.Remeasure(ctx, store, layout)
		} else {
			r, err = readReport(ctx, store, blob.Join(layout.Prefix, report.JSONName))
		}
	}
	if err != nil {
		return err
	}
	r.Notes = append(r.Notes, o.notes...)
	if o.previous != "" {
		prevLayout, err := a.locateRun(ctx, store, o.previous, o.output)
		if err != nil {
			return fmt.Errorf("--previous: %w", err)
		}
		prevURI := blob.Join(prevLayout.Prefix, report.JSONName)
		prev, err := readReport(ctx, store, prevURI)
		if err != nil {
			return fmt.Errorf("--previous: %w", err)
		}
		c := report.Compare(ctx, store, prev, r, prevURI)
		r.Comparison = &c
	}
	if o.regenerate {
		if r, err = report.Publish(ctx, store, layout, r); err != nil {
			return err
		}
		a.log.Info("published the report", zap.String("report", blob.Join(layout.Prefix, report.JSONName)))
	} else {
		// A report.json written before some sections existed gets those that follow
		// from its own figures; the rest say "not recorded".
		report.Derive(&r)
	}
	return writeReport(ctx, store, out, r, o)
}

func writeReport(ctx context.Context, store blob.Store, out io.Writer, r report.Report, o reportOptions) error {
	if o.format == "all" {
		dir, err := filepath.Abs(o.out)
		if err != nil {
			return err
		}
		r, err = report.WriteFiles(ctx, store, "file://"+filepath.ToSlash(dir), r)
		if err != nil {
			return err
		}
		for _, f := range r.Files.Report {
			fmt.Fprintln(out, f)
		}
		return nil
	}
	var data []byte
	var err error
	switch o.format {
	case "json":
		data, err = json.MarshalIndent(r, "", "  ")
		data = append(data, '\n')
	case "html":
		data, err = report.HTML(r)
	default:
		data, err = report.Markdown(r)
	}
	if err != nil {
		return err
	}
	if o.out == "" {
		_, err = out.Write(data)
		return err
	}
	if err := os.WriteFile(o.out, data, 0o644); err != nil {
		return err
	}
	if o.format == "md" {
		// report.md links its charts as charts/NAME.svg beside it.
		dir := filepath.Join(filepath.Dir(o.out), report.ChartsDir)
		for _, c := range report.Charts(r) {
			if !c.Recorded() {
				continue
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, c.Name), c.SVG, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

func (a *app) compareCmd() *cobra.Command {
	var (
		asJSON bool
		output string
	)
	cmd := &cobra.Command{
		Use:   "compare RUN_A RUN_B",
		Short: "Compare two runs: throughput, failures, and score changes per custom_id",
		Long: `Sets run B against run A (the earlier one): throughput, requests per second, failures by
code, and, for candidate-scoring answers, how many custom_ids changed their "recommendation"
(read from both runs' output.jsonl). A run is a run id (looked up in Temporal, or under
--output) or its folder URI.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			store, err := a.store(ctx)
			if err != nil {
				return err
			}
			var reports [2]report.Report
			var uris [2]string
			for i, arg := range args {
				layout, err := a.locateRun(ctx, store, arg, output)
				if err != nil {
					return err
				}
				uris[i] = blob.Join(layout.Prefix, report.JSONName)
				if reports[i], err = readReport(ctx, store, uris[i]); err != nil {
					return err
				}
			}
			c := report.Compare(ctx, store, reports[0], reports[1], uris[0])
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(c)
			}
			md, err := report.CompareMarkdown(c)
			if err != nil {
				return err
			}
			_, err = out.Write(md)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&output, "output", "", "the output prefix the runs' folders are under, to find them without Temporal")
	return cmd
}

// locateRun finds a run's folder: from a folder or report.json URI, from an output
// prefix and the run id, or from the run's result in Temporal.
func (a *app) locateRun(ctx context.Context, store blob.Store, arg, output string) (run.Layout, error) {
	if strings.Contains(arg, "://") || strings.HasPrefix(arg, "/") || strings.HasPrefix(arg, ".") {
		prefix := strings.TrimSuffix(strings.TrimSuffix(localURI(arg), "/"+report.JSONName), "/")
		return run.Layout{RunID: prefix[strings.LastIndex(prefix, "/")+1:], Prefix: prefix}, nil
	}
	if output != "" {
		return run.NewLayout(output, run.ID(arg)), nil
	}
	c, err := a.dial(ctx)
	if err != nil {
		return run.Layout{}, fmt.Errorf("%w (or name the run's folder: s3://bucket/prefix/%s, or pass --output PREFIX)", err, arg)
	}
	defer c.Close()
	res, err := runResult(ctx, c.GetWorkflow(ctx, arg, ""))
	if err != nil {
		return run.Layout{}, err
	}
	if res.Report == "" {
		return run.Layout{}, fmt.Errorf("run %s has no report", arg)
	}
	prefix := strings.TrimSuffix(res.Report, "/"+report.JSONName)
	return run.Layout{RunID: prefix[strings.LastIndex(prefix, "/")+1:], Prefix: prefix}, nil
}

// localURI turns a local path into a file:// URI and leaves URIs as they are.
func localURI(p string) string {
	if strings.Contains(p, "://") {
		return p
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "file://" + filepath.ToSlash(p)
	}
	return "file://" + filepath.ToSlash(abs)
}

func readReport(ctx context.Context, store blob.Store, uri string) (report.Report, error) {
	var r report.Report
	if err := blob.ReadJSON(ctx, store, uri, &r); err != nil {
		return r, fmt.Errorf("read report: %w", err)
	}
	return r, nil
}
