// Render an Ollama Modelfile TEMPLATE with Go's own text/template, the way Ollama's chat endpoint does,
// so an export checks its Modelfile against the model's Hugging Face chat template (core/ollama.py, built once
// into tunewiz's cache where Go is installed; tests/test_export.py runs it on every template family).
//
// stdin: {"template": "...", "system": "<the Modelfile's SYSTEM, or empty>", "messages": [{"role", "content"}]}
// stdout: the rendered prompt. Standard library only: go build works offline (GOTOOLCHAIN=local).
//
// What Ollama does before executing a TEMPLATE that uses .Messages (server/routes.go, template/template.go):
//   - the Modelfile's SYSTEM is put first as a system message when the request does not start with one;
//   - consecutive messages of the same role are merged, joined by a blank line, and every system
//     message's content is also joined into .System;
//   - the template is parsed with Option("missingkey=zero") and executed with
//     {System, Messages (each with .Role and .Content), Prompt, Response: ""}.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type input struct {
	Template string    `json:"template"`
	System   string    `json:"system"`
	Messages []Message `json:"messages"`
}

func collate(msgs []Message) (string, []*Message) {
	var system []string
	var out []*Message
	for i := range msgs {
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		if n := len(out); n > 0 && out[n-1].Role == msgs[i].Role && msgs[i].Role != "tool" {
			out[n-1].Content += "\n\n" + msgs[i].Content
		} else {
			m := msgs[i]
			out = append(out, &m)
		}
	}
	return strings.Join(system, "\n\n"), out
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, "bad input:", err)
		os.Exit(2)
	}
	msgs := in.Messages
	if in.System != "" && (len(msgs) == 0 || msgs[0].Role != "system") {
		msgs = append([]Message{{Role: "system", Content: in.System}}, msgs...)
	}
	system, collated := collate(msgs)
	tmpl, err := template.New("").Option("missingkey=zero").Parse(in.Template)
	if err != nil {
		fmt.Fprintln(os.Stderr, "parse:", err)
		os.Exit(1)
	}
	data := map[string]any{"System": system, "Messages": collated, "Prompt": "", "Response": ""}
	if err := tmpl.Execute(os.Stdout, data); err != nil {
		fmt.Fprintln(os.Stderr, "execute:", err)
		os.Exit(1)
	}
}
