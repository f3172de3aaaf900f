package main

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The repository root, from this package's directory.
const repoRoot = "../.."

const modulePath = "github.com/backbone-sync/backbone"

// goPackages lists the directories under roots that hold non-test Go files,
// relative to the repository root, with each one's imports of this module.
func goPackages(t *testing.T, roots ...string) map[string][]string {
	t.Helper()
	pkgs := map[string][]string{}
	for _, root := range roots {
		err := filepath.WalkDir(filepath.Join(repoRoot, root), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
			if err != nil {
				return err
			}
			dir, _ := filepath.Rel(repoRoot, filepath.Dir(path))
			dir = filepath.ToSlash(dir)
			if _, ok := pkgs[dir]; !ok {
				pkgs[dir] = nil
			}
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if rest, ok := strings.CutPrefix(p, modulePath+"/"); ok {
					pkgs[dir] = append(pkgs[dir], rest)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return pkgs
}

// TestReadmeLayoutMatchesTheTree: every path the README's layout table
// names exists, and every Go package under functions/, shared/ and
// internal/ has its row.
func TestReadmeLayoutMatchesTheTree(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(readme), "### Code layout")
	if !ok {
		t.Fatal("README has no Code layout section")
	}
	table, _, _ = strings.Cut(table, "\n## ")
	listed := map[string]bool{}
	path := regexp.MustCompile("`([^`]+)`")
	for line := range strings.SplitSeq(table, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || strings.HasPrefix(strings.TrimSpace(cells[1]), "---") {
			continue
		}
		for _, m := range path.FindAllStringSubmatch(cells[1], -1) {
			p := strings.TrimSuffix(m[1], "/")
			listed[p] = true
			if _, err := os.Stat(filepath.Join(repoRoot, p)); err != nil {
				t.Errorf("the layout table names %s, which does not exist", p)
			}
		}
	}
	if len(listed) == 0 {
		t.Fatal("no paths in the layout table")
	}
	for dir := range goPackages(t, "functions", "shared", "internal") {
		if !listed[dir] {
			t.Errorf("package %s has no row in the README's layout table", dir)
		}
	}
}

// TestArchitectureNamesRealFiles: every file docs/architecture.md names on
// the raw event's path exists.
func TestArchitectureNamesRealFiles(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	files := regexp.MustCompile(`\b(?:cmd|functions|shared|internal)/[a-z0-9_/]+\.go\b`).FindAllString(string(doc), -1)
	if len(files) < 10 {
		t.Fatalf("docs/architecture.md names %d files; it should draw the whole path", len(files))
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(repoRoot, f)); err != nil {
			t.Errorf("docs/architecture.md names %s, which does not exist", f)
		}
	}
}

// TestImportsPointDown: data flows one way. shared/ imports no function,
// tool or command; a function imports no other function and no tool; the
// tools import no command.
func TestImportsPointDown(t *testing.T) {
	t.Parallel()
	for dir, imports := range goPackages(t, "functions", "shared", "internal") {
		top := strings.SplitN(dir, "/", 3)
		for _, imp := range imports {
			var banned []string
			switch top[0] {
			case "shared":
				banned = []string{"functions", "internal", "cmd"}
			case "functions":
				banned = []string{"internal", "cmd"}
				if strings.HasPrefix(imp, "functions/") && !strings.HasPrefix(imp, dir) {
					t.Errorf("%s imports another function, %s", dir, imp)
				}
			case "internal":
				banned = []string{"cmd"}
			}
			if slices.Contains(banned, strings.SplitN(imp, "/", 2)[0]) {
				t.Errorf("%s imports %s: an arrow pointing up the tree", dir, imp)
			}
		}
	}
}

// TestNoImportAlias: package names do not clash, so no import needs an
// alias (a blank import for side effects would be the one exception).
func TestNoImportAlias(t *testing.T) {
	t.Parallel()
	files := 0
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != repoRoot || d.Name() == "node_modules" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		files++
		for _, imp := range f.Imports {
			if imp.Name != nil && imp.Name.Name != "_" {
				t.Errorf("%s imports %s as %s", path, imp.Path.Value, imp.Name.Name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 100 {
		t.Fatalf("read %d Go files; the walk missed the tree", files)
	}
}
