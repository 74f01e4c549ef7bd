// gitops-check: how Argo CD and Flux read a Kubernetes object, for Rewind's tests.
//
// For every object it prints one JSON line with how each tool reads it:
//
//   - argocd: a resource-customization health.lua run over the object the way Argo CD runs it
//     (github.com/yuin/gopher-lua, the interpreter Argo CD embeds; the object as a global table
//     `obj`; the libraries an argocd-cm customization gets; a 1 s budget; the returned table read
//     back through JSON into status and message, an invalid status turned into Unknown). It
//     mirrors the essentials of argo-cd's util/lua (VM.runLua, VM.ExecuteHealthLua, decodeValue)
//     without depending on Argo CD itself.
//   - kstatus: sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute on the object as unstructured,
//     the library Flux's health checks are built on. (Flux builds with its fork,
//     github.com/fluxcd/cli-utils, whose pkg/kstatus/status is the same code as v0.37.2's.)
//
// The line:
//
//	{"name": ..., "argocd": {"status": ..., "message": ...}, "kstatus": {"status": ..., "message": ...}}
//
// Usage:
//
//	gitops-check --lua health.lua [--open-libs] [FILE...]   objects from files (YAML or JSON), or
//	                                                       a stream of JSON objects on stdin
//	gitops-check --argocd-tests DIR [--open-libs]          Argo CD's fixture convention: run
//	                                                       DIR/health.lua over every input of
//	                                                       DIR/health_test.yaml; each line also
//	                                                       carries "expected"
//
// Lines come in input order. A script that fails reads as Argo CD shows it (status Unknown, the
// error as message) and the line carries "error". The exit status is 0 unless the input or the
// script cannot be read at all.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

// Health is what Argo CD keeps of a health check: its status code and message.
type Health struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

// Check is how one tool reads the object; Error is set when it could not.
type Check struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

// Line is one object's output.
type Line struct {
	Name     string  `json:"name"`
	ArgoCD   Check   `json:"argocd"`
	KStatus  Check   `json:"kstatus"`
	Expected *Health `json:"expected,omitempty"`
}

// The health codes Argo CD accepts from a script (gitops-engine's HealthStatusCode values);
// anything else reads as Unknown with this message.
var validHealth = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true, "Degraded": true,
	"Missing": true,
}

const (
	invalidHealthStatus = "Lua returned an invalid health status"
	incorrectReturnType = "expect table output from Lua script, not %s"
	// Argo CD gives a script one second.
	scriptBudget = time.Second
)

func main() {
	luaPath := flag.String("lua", "", "the health.lua to run")
	openLibs := flag.Bool("open-libs", false, "open Lua's standard libraries, as Argo CD does for its built-in scripts and for customizations with useOpenLibs (default: only what an argocd-cm customization gets)")
	testsDir := flag.String("argocd-tests", "", "a directory laid out as Argo CD's resource_customizations/<group>/<kind>/: health.lua, health_test.yaml, testdata/")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s --lua health.lua [--open-libs] [FILE...]\n       %s --argocd-tests DIR [--open-libs]\n", os.Args[0], os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	out := json.NewEncoder(os.Stdout)
	out.SetEscapeHTML(false)
	var err error
	switch {
	case *testsDir != "":
		err = runTests(*testsDir, *openLibs, out)
	case *luaPath != "":
		err = runObjects(*luaPath, *openLibs, flag.Args(), out)
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "gitops-check: %v\n", err)
		os.Exit(1)
	}
}

func readScript(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the health script: %w", err)
	}
	return string(b), nil
}

// runObjects checks files, or the JSON objects on stdin when there are none.
func runObjects(luaPath string, openLibs bool, files []string, out *json.Encoder) error {
	script, err := readScript(luaPath)
	if err != nil {
		return err
	}
	if len(files) > 0 {
		for _, f := range files {
			obj, err := readObjectFile(f)
			if err != nil {
				return err
			}
			if err := out.Encode(check(f, obj, script, openLibs)); err != nil {
				return err
			}
		}
		return nil
	}
	dec := json.NewDecoder(bufio.NewReader(os.Stdin))
	for n := 1; ; n++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("object %d on stdin: %w", n, err)
		}
		obj, err := fromJSON(raw)
		if err != nil {
			return fmt.Errorf("object %d on stdin: %w", n, err)
		}
		name := obj.GetName()
		if ns := obj.GetNamespace(); ns != "" {
			name = ns + "/" + name
		}
		if err := out.Encode(check(name, obj, script, openLibs)); err != nil {
			return err
		}
	}
}

// runTests follows argo-cd's TestLuaHealthScript: health_test.yaml lists inputPath and the
// healthStatus expected for it.
func runTests(dir string, openLibs bool, out *json.Encoder) error {
	script, err := readScript(filepath.Join(dir, "health.lua"))
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		return err
	}
	var tests struct {
		Tests []struct {
			InputPath    string `json:"inputPath"`
			HealthStatus Health `json:"healthStatus"`
		} `json:"tests"`
	}
	if err := yaml.UnmarshalStrict(b, &tests); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, "health_test.yaml"), err)
	}
	if len(tests.Tests) == 0 {
		return fmt.Errorf("%s lists no tests", filepath.Join(dir, "health_test.yaml"))
	}
	for _, t := range tests.Tests {
		obj, err := readObjectFile(filepath.Join(dir, t.InputPath))
		if err != nil {
			return err
		}
		line := check(t.InputPath, obj, script, openLibs)
		expected := t.HealthStatus
		line.Expected = &expected
		if err := out.Encode(line); err != nil {
			return err
		}
	}
	return nil
}

func readObjectFile(path string) (*unstructured.Unstructured, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	obj, err := fromJSON(j)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return obj, nil
}

// fromJSON decodes as client-go does for the objects Argo CD caches and Flux reads
// (integers as int64).
func fromJSON(b []byte) (*unstructured.Unstructured, error) {
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(bytes.TrimSpace(b)); err != nil {
		return nil, err
	}
	return obj, nil
}

func check(name string, obj *unstructured.Unstructured, script string, openLibs bool) Line {
	line := Line{Name: name}
	if h, err := argoHealth(obj, script, openLibs); err != nil {
		// What Argo CD shows for a health script that fails.
		line.ArgoCD = Check{Status: "Unknown", Message: err.Error(), Error: err.Error()}
	} else {
		line.ArgoCD = Check{Status: h.Status, Message: h.Message}
	}
	// Compute may change nothing in the object, but give it a copy anyway.
	if res, err := status.Compute(obj.DeepCopy()); err != nil {
		line.KStatus = Check{Status: "Unknown", Message: err.Error(), Error: err.Error()}
	} else {
		line.KStatus = Check{Status: res.Status.String(), Message: res.Message}
	}
	return line
}

// argoHealth runs the script as Argo CD's VM.ExecuteHealthLua does.
func argoHealth(obj *unstructured.Unstructured, script string, openLibs bool) (*Health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: !openLibs})
	defer l.Close()
	// Always opened, also for argocd-cm customizations: package, base, table, and a safe os
	// (time and date only).
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, fmt.Errorf("opening Lua library %q: %w", lib.name, err)
		}
	}
	l.PreloadModule(lua.OsLibName, safeOsLoader)
	ctx, cancel := context.WithTimeout(context.Background(), scriptBudget)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("actionParams", l.CreateTable(0, 0))
	l.SetGlobal("obj", decodeValue(l, obj.Object))
	fn, err := l.LoadString(script)
	if err == nil {
		l.Push(fn)
		err = l.PCall(0, lua.MultRet, nil)
	}
	var apiErr *lua.ApiError
	if errors.As(err, &apiErr) && apiErr.Type == lua.ApiErrorRun {
		// Argo CD drops the stack trace from what users see.
		apiErr.StackTrace = ""
		err = apiErr
	}
	if err != nil {
		return nil, err
	}
	ret := l.Get(-1)
	switch ret.Type() {
	case lua.LTNil:
		return &Health{}, nil
	case lua.LTTable:
	default:
		return nil, fmt.Errorf(incorrectReturnType, ret.Type().String())
	}
	b, err := luajson.Encode(ret)
	if err != nil {
		return nil, err
	}
	h := &Health{}
	if err := json.Unmarshal(b, h); err != nil {
		// An empty table encodes as [], which Argo CD takes for an empty health.
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Value == "array" {
			return &Health{}, nil
		}
		return nil, err
	}
	if !validHealth[h.Status] {
		return &Health{Status: "Unknown", Message: invalidHealthStatus}, nil
	}
	return h, nil
}

// decodeValue turns a decoded JSON value into a Lua value as Argo CD's decodeValue does:
// numbers (float64 or integers) become numbers, json.Number a string, arrays tables with
// indexes from 1, objects tables with string keys, null and anything else nil.
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case []any:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}

// The part of Lua's os library Argo CD lets scripts use: time and date.
var safeOsFuncs = map[string]lua.LGFunction{
	"time": osTime,
	"date": osDate,
}

func openSafeOs(l *lua.LState) int {
	l.Push(l.RegisterModule(lua.OsLibName, safeOsFuncs))
	return 1
}

func safeOsLoader(l *lua.LState) int {
	l.Push(l.SetFuncs(l.NewTable(), safeOsFuncs))
	return 1
}

func osTime(l *lua.LState) int {
	if l.GetTop() == 0 {
		l.Push(lua.LNumber(time.Now().Unix()))
		return 1
	}
	tbl := l.CheckTable(1)
	field := func(key string, def int) int {
		if n, ok := tbl.RawGetString(key).(lua.LNumber); ok {
			return int(n)
		}
		return def
	}
	t := time.Date(field("year", -1), time.Month(field("month", -1)), field("day", -1),
		field("hour", 12), field("min", 0), field("sec", 0), 0, time.Local)
	l.Push(lua.LNumber(t.Unix()))
	return 1
}

// osDate supports what a health script needs: os.date() and os.date("!%Y-%m-%dT%H:%M:%SZ")-like
// formats with the common strftime verbs, UTC with a leading '!'.
func osDate(l *lua.LState) int {
	t := time.Now()
	format := "%c"
	if l.GetTop() >= 1 {
		format = l.CheckString(1)
		if len(format) > 0 && format[0] == '!' {
			t = t.UTC()
			format = format[1:]
		}
		if l.GetTop() >= 2 {
			t = time.Unix(int64(l.CheckInt(2)), 0)
		}
	}
	var b bytes.Buffer
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i+1 == len(format) {
			b.WriteByte(c)
			continue
		}
		i++
		switch format[i] {
		case 'Y':
			fmt.Fprintf(&b, "%04d", t.Year())
		case 'm':
			fmt.Fprintf(&b, "%02d", int(t.Month()))
		case 'd':
			fmt.Fprintf(&b, "%02d", t.Day())
		case 'H':
			fmt.Fprintf(&b, "%02d", t.Hour())
		case 'M':
			fmt.Fprintf(&b, "%02d", t.Minute())
		case 'S':
			fmt.Fprintf(&b, "%02d", t.Second())
		case 'c':
			b.WriteString(t.Format(time.ANSIC))
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(format[i])
		}
	}
	l.Push(lua.LString(b.String()))
	return 1
}
