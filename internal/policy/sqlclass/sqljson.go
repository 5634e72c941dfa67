package sqlclass

import (
	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// olderServerCallName returns the function an older server calls for an expression that
// PostgreSQL 17's grammar, the parser's, reads as syntax of its own: the SQL/JSON functions
// and constructors (PostgreSQL 16: JSON_OBJECT(), JSON_ARRAY, JSON_ARRAYAGG; 17: JSON_VALUE,
// JSON_QUERY, JSON_EXISTS, JSON_SCALAR, JSON_SERIALIZE, JSON) and MERGE_ACTION() (17). Before
// those versions the same text is an ordinary call resolved through search_path, and pg_catalog
// has no function of any of these names that it could resolve to (json_object(text[]) takes
// arguments, which the parser reads as a call of pg_catalog.json_object), so it runs a function
// some role created: json_value('{}', '$') calls public.json_value(text, text) on PostgreSQL 15.
// The proxy does not know the server's version, so it judges each as that call. "" for any other
// node, and for SQL/JSON syntax an older server refuses as a syntax error (IS JSON, JSON_TABLE,
// JSON_OBJECTAGG, JSON_OBJECT with keys, JSON_ARRAY of a bare query).
func olderServerCallName(m protoreflect.ProtoMessage) string {
	switch x := m.(type) {
	case *pg.JsonFuncExpr:
		switch x.Op {
		case pg.JsonExprOp_JSON_EXISTS_OP:
			return "json_exists"
		case pg.JsonExprOp_JSON_QUERY_OP:
			return "json_query"
		case pg.JsonExprOp_JSON_VALUE_OP:
			return "json_value"
		}
		return "json_table" // JSON_TABLE_OP: not made by the grammar; a name no server has built in
	case *pg.JsonScalarExpr:
		return "json_scalar"
	case *pg.JsonSerializeExpr:
		return "json_serialize"
	case *pg.JsonParseExpr:
		// Without a function of this name, json(x) is a cast to json; with one (public.json(text)),
		// json(x::text) calls it.
		return "json"
	case *pg.JsonObjectConstructor:
		if len(x.Exprs) == 0 {
			return "json_object"
		}
	case *pg.JsonArrayConstructor:
		return "json_array"
	case *pg.JsonArrayAgg:
		return "json_arrayagg"
	case *pg.MergeSupportFunc:
		return "merge_action"
	}
	return ""
}

// addOlderServerCall records the call an older server makes for m (see olderServerCallName). It
// is code with unknown effects whatever the function lists say of its name: on a server with the
// syntax it is the built-in expression, on one without it never a pg_catalog function.
func (w *walker) addOlderServerCall(m protoreflect.ProtoMessage) {
	name := olderServerCallName(m)
	if name == "" {
		return
	}
	w.funcs = append(w.funcs, name)
	w.funcClass |= effectClass(name) | fnProcedural
}
