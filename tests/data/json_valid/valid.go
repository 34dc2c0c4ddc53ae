// Prints, for each base64 line on stdin, {"body_b64": line, "valid": json.Valid(body)}:
// the answers in tests/data/json_valid_vectors.jsonl (see candidates.py beside it).
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
)

func main() {
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		b, err := base64.StdEncoding.DecodeString(sc.Text())
		if err != nil {
			panic(err)
		}
		out, _ := json.Marshal(map[string]any{"body_b64": sc.Text(), "valid": json.Valid(b)})
		fmt.Println(string(out))
	}
}
