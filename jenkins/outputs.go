package jenkins

import (
	"encoding/json"

	"github.com/signet-ci/signet/core"
)

// outputs is the JSON the signetSign step reads back (docs/jenkins.md).
type outputs struct {
	Key        outputKey        `json:"key"`
	PublicKey  string           `json:"public_key"`
	Provenance string           `json:"provenance,omitempty"`
	Signatures []string         `json:"signatures"`
	Artifacts  []outputArtifact `json:"artifacts"`
	AuditSeq   uint64           `json:"audit_seq"`
}

type outputKey struct {
	Name      string `json:"name"`
	Algorithm string `json:"algorithm"`
	Purpose   string `json:"purpose,omitempty"`
	KeyID     string `json:"key_id"`
}

type outputArtifact struct {
	Name      string `json:"name"`
	Path      string `json:"path"`
	SHA256    string `json:"sha256"`
	Signature string `json:"signature"`
}

func writeOutputs(path string, res *core.Result) error {
	out := outputs{
		Key: outputKey{
			Name:      res.Key.Name,
			Algorithm: res.Key.Algorithm,
			Purpose:   res.Key.Purpose,
			KeyID:     res.Key.KeyID,
		},
		PublicKey:  res.PublicKeyPath,
		Provenance: res.ProvenancePath,
		Signatures: []string{},
		Artifacts:  []outputArtifact{},
		AuditSeq:   res.AuditSeq,
	}
	for _, a := range res.Artifacts {
		out.Artifacts = append(out.Artifacts, outputArtifact{Name: a.Name, Path: a.Path, SHA256: a.SHA256, Signature: a.SignaturePath})
		if a.SignaturePath != "" {
			out.Signatures = append(out.Signatures, a.SignaturePath)
		}
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	// The step puts the file in ${WORKSPACE}@tmp, which may not exist yet:
	// core.WriteFileAtomic creates the directory.
	return core.WriteFileAtomic(path, append(b, '\n'), 0o644)
}
