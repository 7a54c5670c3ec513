package signer

import (
	"fmt"
	"path"

	"github.com/signet-ci/signet/core"
)

// PolicyError is a refusal by a key's policy; Reason names the closest rule
// and the first condition that differed (never the token).
type PolicyError struct {
	Code   string // core.ErrCodePolicyDenied or core.ErrCodePurposeMismatch
	Reason string
}

func (e *PolicyError) Error() string { return e.Reason }

// claimAsString renders a claim for matching (core.ClaimString: strings as
// they are, numbers and booleans as their string form); ok is false for
// anything else.
func claimAsString(v any) (string, bool) {
	s, err := core.ClaimString(v)
	return s, err == nil
}

// matchValue matches a claim value against an exact value or a path.Match
// glob ('*' does not cross '/').
func matchValue(pattern, value string) bool {
	if pattern == value {
		return true
	}
	ok, err := path.Match(pattern, value)
	return err == nil && ok
}

// Authorize decides whether principal p may use key k. Deny by default: one
// rule must match in full (issuer, purpose and every listed claim).
func Authorize(k *Key, p *Principal) error {
	type miss struct {
		rule    int
		score   int
		total   int
		message string
	}
	var best *miss
	purposeOnly := false
	for i, r := range k.Rules {
		total := 2 + len(r.Claims)
		score := 0
		var first string
		if r.Issuer == p.Issuer {
			score++
		} else {
			first = fmt.Sprintf("issuer is %q, rule wants %q", p.Issuer, r.Issuer)
		}
		if r.Purpose == "" || r.Purpose == k.Purpose {
			score++
		} else if first == "" {
			first = fmt.Sprintf("rule is for %s keys, key %q is a %s key", r.Purpose, k.Name, k.Purpose)
		}
		// The message names the first differing claim in name order, found
		// without sorting the names on every request.
		missName, missMsg := "", ""
		for n, want := range r.Claims {
			raw, present := p.Claims[n]
			got, scalar := claimAsString(raw)
			if present && scalar && matchValue(want, got) {
				score++
				continue
			}
			if first != "" || (missMsg != "" && n > missName) {
				continue
			}
			missName = n
			switch {
			case !present:
				missMsg = fmt.Sprintf("claim %q is missing, rule wants %q", n, want)
			case !scalar:
				missMsg = fmt.Sprintf("claim %q is a %s, rule wants %q", n, jsonType(raw), want)
			default:
				missMsg = fmt.Sprintf("claim %q is %q, rule wants %q", n, got, want)
			}
		}
		if first == "" {
			first = missMsg
		}
		if score == total {
			return nil
		}
		if score == total-1 && r.Purpose != "" && r.Purpose != k.Purpose {
			purposeOnly = true
		}
		if best == nil || score*best.total > best.score*total {
			best = &miss{rule: i, score: score, total: total, message: first}
		}
	}
	code := core.ErrCodePolicyDenied
	if purposeOnly {
		code = core.ErrCodePurposeMismatch
	}
	if best == nil {
		return &PolicyError{Code: code, Reason: fmt.Sprintf("key %q has no rules: nobody may use it", k.Name)}
	}
	return &PolicyError{Code: code, Reason: fmt.Sprintf("no rule of key %q allows this identity; closest is allow[%d] (issuer %s): %s",
		k.Name, best.rule, k.Rules[best.rule].Issuer, best.message)}
}
