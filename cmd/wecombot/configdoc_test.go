package main

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestConfigurationDocumented: every key of the configuration file is in
// docs/configuration.md (as `section.key`, or `bots[].key` for the bots'
// keys), so the reference cannot fall behind the code.
func TestConfigurationDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	configKeys(reflect.TypeFor[Config](), "", &keys)
	if len(keys) < 40 || !slices.Contains(keys, "bots[].kf.welcome") || !slices.Contains(keys, "llm.vision") {
		t.Fatalf("found %d keys: %v; the walk lost some", len(keys), keys)
	}
	for _, k := range keys {
		if !strings.Contains(string(doc), "`"+k+"`") {
			t.Errorf("docs/configuration.md does not name `%s`", k)
		}
	}
}

// configKeys appends the YAML keys of t under prefix: the leaves, and for a
// slice of structs its entries' keys under "name[]."; inlined structs add
// their keys to the outer one. A yaml.Node (bots[].llm, any key of the llm
// section) is a leaf.
func configKeys(t reflect.Type, prefix string, keys *[]string) {
	for f := range t.Fields() {
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		ft := f.Type
		if strings.Contains(opts, "inline") {
			configKeys(ft, prefix, keys)
			continue
		}
		if name == "" {
			continue
		}
		key := prefix + name
		switch {
		case ft.Kind() == reflect.Struct && ft.NumField() > 0 && ft.PkgPath() != "github.com/wecombot/wecombot/internal/config" && ft.Name() != "Node":
			configKeys(ft, key+".", keys)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			configKeys(ft.Elem(), key+"[].", keys)
		default:
			*keys = append(*keys, key)
		}
	}
}
