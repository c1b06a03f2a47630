package api

import (
	"sort"
	"strings"
)

// ListResult is the envelope of every list (docs/mqtt-api.md §2).
type ListResult struct {
	Search       *string `json:"search" doc:"The search asked for, null for none."`
	SortBy       *string `json:"sortBy,omitempty" doc:"The order asked for, when one was."`
	Page         int     `json:"page" min:"1"`
	ItemsPerPage int     `json:"itemsPerPage" min:"1"`
	Total        int     `json:"total" min:"0" doc:"How many items match, on every page."`
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

// readListParams reads the values ListPayload declared.
func readListParams(a *Args) listParams {
	lp := listParams{page: 1, itemsPerPage: defaultItemsPerPage}
	lp.search, _ = a.String("search")
	if n, ok := a.Int("page"); ok {
		lp.page = int(n)
	}
	if n, ok := a.Int("itemsPerPage"); ok {
		lp.itemsPerPage = int(n)
	}
	if s, _ := a.String("sortBy"); s != "" {
		lp.sortBy, lp.desc = strings.TrimPrefix(s, "-"), strings.HasPrefix(s, "-")
	}
	return lp
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
