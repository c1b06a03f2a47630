package api

import (
	"encoding/json"
	"sort"
	"strings"
)

// ListResult is the envelope of every list (docs/mqtt-api.md §2).
type ListResult struct {
	Search       *string `json:"search"`
	SortBy       *string `json:"sortBy,omitempty"`
	Page         int     `json:"page"`
	ItemsPerPage int     `json:"itemsPerPage"`
	Total        int     `json:"total"`
	Items        any     `json:"items"`
}

const (
	defaultItemsPerPage = 20
	maxItemsPerPage     = 500
)

type listParams struct {
	search       string
	sortBy       string
	desc         bool
	page         int
	itemsPerPage int
}

// readListParams parses search, page, itemsPerPage and sortBy; sortBy names
// one of sortable, with a leading "-" for descending order.
func readListParams(raw json.RawMessage, sortable []string) (listParams, *Error) {
	p := readPayload(raw)
	lp := listParams{page: 1, itemsPerPage: defaultItemsPerPage}
	lp.search, _, _ = p.NullableString("search", 256)
	if n, ok := p.Int("page", false, 1, 1<<30); ok {
		lp.page = n
	}
	if n, ok := p.Int("itemsPerPage", false, 1, maxItemsPerPage); ok {
		lp.itemsPerPage = n
	}
	if s, set, ok := p.NullableString("sortBy", 64); set && ok && s != "" {
		field := strings.TrimPrefix(s, "-")
		known := false
		for _, f := range sortable {
			known = known || f == field
		}
		if !known {
			p.fail("sortBy", "must be one of "+strings.Join(sortable, ", ")+" (prefix - for descending)")
		} else {
			lp.sortBy, lp.desc = field, strings.HasPrefix(s, "-")
		}
	}
	if err := p.Err(); err != nil {
		return lp, err
	}
	return lp, nil
}

// paginate filters, sorts and pages items. key returns the sort key of an
// item for a field name; matches decides the search.
func paginate[T any](items []T, lp listParams, matches func(T, string) bool, key func(T, string) string, view func(T) any) ListResult {
	if q := strings.ToLower(strings.TrimSpace(lp.search)); q != "" {
		kept := items[:0:0]
		for _, it := range items {
			if matches(it, q) {
				kept = append(kept, it)
			}
		}
		items = kept
	}
	if lp.sortBy != "" {
		sort.SliceStable(items, func(i, j int) bool {
			a, b := key(items[i], lp.sortBy), key(items[j], lp.sortBy)
			if lp.desc {
				return a > b
			}
			return a < b
		})
	}
	res := ListResult{Page: lp.page, ItemsPerPage: lp.itemsPerPage, Total: len(items)}
	if lp.search != "" {
		res.Search = &lp.search
	}
	if lp.sortBy != "" {
		s := lp.sortBy
		if lp.desc {
			s = "-" + s
		}
		res.SortBy = &s
	}
	start := (lp.page - 1) * lp.itemsPerPage
	out := make([]any, 0, lp.itemsPerPage)
	for i := start; i < len(items) && i < start+lp.itemsPerPage; i++ {
		out = append(out, view(items[i]))
	}
	res.Items = out
	return res
}

func containsFold(haystack, lowerNeedle string) bool {
	return strings.Contains(strings.ToLower(haystack), lowerNeedle)
}
