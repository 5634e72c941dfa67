package sqlclass

import (
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// selectWhere reports whether a SELECT (every arm of a set operation) has a
// WHERE, and whether any of them is constant. Functions taking valueDep set
// it when they read a constant's value: WHERE id = 5 OR 1 = 2 and
// WHERE id = 5 OR 1 = 1 differ only in literals.
func selectWhere(s *pg.SelectStmt, valueDep *bool) (has, constant bool) {
	if s.Op != pg.SetOperation_SETOP_NONE && s.Op != pg.SetOperation_SET_OPERATION_UNDEFINED {
		lh, lc := selectWhere(s.GetLarg(), valueDep)
		rh, rc := selectWhere(s.GetRarg(), valueDep)
		return lh && rh, lc || rc
	}
	if s.WhereClause == nil {
		return false, false
	}
	return true, constantCondition(s.WhereClause, valueDep)
}

// constantCondition reports whether a condition does not depend on the row:
// it names no column, or it folds to a constant (WHERE id = 1 OR true).
// A condition that only references columns inside a subquery is treated as
// row-dependent (correlation is not analysed).
func constantCondition(n *pg.Node, valueDep *bool) bool {
	if !hasColumnRef(n.ProtoReflect()) {
		return true
	}
	return fold(n, valueDep) != triUnknown
}

func hasColumnRef(m protoreflect.Message) bool {
	if _, ok := m.Interface().(*pg.ColumnRef); ok {
		return true
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len() && !found; i++ {
				found = hasColumnRef(l.Get(i).Message())
			}
		} else {
			found = hasColumnRef(v.Message())
		}
		return !found
	})
	return found
}

type tri uint8

const (
	triUnknown tri = iota
	triTrue
	triFalse
)

func triOf(b bool) tri {
	if b {
		return triTrue
	}
	return triFalse
}

// fold evaluates a boolean condition as far as constants allow. Whether a
// constant is TRUE, FALSE or NULL (keywords) or a number or a string (token
// types) is part of the shape; reading a number's or a string's value sets
// *valueDep.
func fold(n *pg.Node, valueDep *bool) tri {
	switch v := n.GetNode().(type) {
	case *pg.Node_AConst:
		return foldConst(v.AConst, valueDep)
	case *pg.Node_TypeCast:
		if c := v.TypeCast.Arg.GetAConst(); c != nil {
			if i, ok := c.Val.(*pg.A_Const_Ival); ok {
				*valueDep = true
				return triOf(i.Ival.Ival != 0)
			}
			return foldConst(c, valueDep)
		}
		return fold(v.TypeCast.Arg, valueDep)
	case *pg.Node_BoolExpr:
		return foldBool(v.BoolExpr, valueDep)
	case *pg.Node_AExpr:
		return foldExpr(v.AExpr, valueDep)
	case *pg.Node_NullTest:
		if c := v.NullTest.Arg.GetAConst(); c != nil {
			isNull := c.Isnull
			if v.NullTest.Nulltesttype == pg.NullTestType_IS_NULL {
				return triOf(isNull)
			}
			return triOf(!isNull)
		}
	case *pg.Node_BooleanTest:
		t := fold(v.BooleanTest.Arg, valueDep)
		if t == triUnknown {
			return triUnknown
		}
		switch v.BooleanTest.Booltesttype {
		case pg.BoolTestType_IS_TRUE, pg.BoolTestType_IS_NOT_FALSE:
			return t
		case pg.BoolTestType_IS_FALSE, pg.BoolTestType_IS_NOT_TRUE:
			return not(t)
		}
	}
	return triUnknown
}

func not(t tri) tri {
	switch t {
	case triTrue:
		return triFalse
	case triFalse:
		return triTrue
	}
	return triUnknown
}

func foldConst(c *pg.A_Const, valueDep *bool) tri {
	switch v := c.Val.(type) {
	case *pg.A_Const_Boolval:
		return triOf(v.Boolval.Boolval)
	case *pg.A_Const_Sval:
		*valueDep = true
		if b, ok := parseBool(v.Sval.Sval); ok {
			return triOf(b)
		}
	}
	return triUnknown
}

func foldBool(b *pg.BoolExpr, valueDep *bool) tri {
	switch b.Boolop {
	case pg.BoolExprType_NOT_EXPR:
		if len(b.Args) == 1 {
			return not(fold(b.Args[0], valueDep))
		}
	case pg.BoolExprType_AND_EXPR:
		out := triTrue
		for _, a := range b.Args {
			switch fold(a, valueDep) {
			case triFalse:
				return triFalse
			case triUnknown:
				out = triUnknown
			}
		}
		return out
	case pg.BoolExprType_OR_EXPR:
		out := triFalse
		for _, a := range b.Args {
			switch fold(a, valueDep) {
			case triTrue:
				return triTrue
			case triUnknown:
				out = triUnknown
			}
		}
		return out
	}
	return triUnknown
}

func foldExpr(e *pg.A_Expr, valueDep *bool) tri {
	if len(e.Name) == 0 {
		return triUnknown
	}
	op := e.Name[len(e.Name)-1].GetString_().GetSval()
	switch e.Kind {
	case pg.A_Expr_Kind_AEXPR_OP:
	case pg.A_Expr_Kind_AEXPR_NOT_DISTINCT:
		op = "="
	case pg.A_Expr_Kind_AEXPR_DISTINCT:
		op = "<>"
	default:
		return triUnknown
	}
	// The same column on both sides: id = id (true except for NULLs, which
	// still leaves the condition row-independent in practice).
	if l, r := columnName(e.Lexpr), columnName(e.Rexpr); l != "" && l == r {
		switch op {
		case "=", "<=", ">=":
			return triTrue
		case "<>", "!=", "<", ">":
			return triFalse
		}
		return triUnknown
	}
	lc, rc := constOperand(e.Lexpr), constOperand(e.Rexpr)
	if lc == nil || rc == nil {
		return triUnknown
	}
	*valueDep = true
	cmp, ordered, ok := compareConst(lc, rc)
	if !ok {
		return triUnknown
	}
	if !ordered && op != "=" && op != "<>" && op != "!=" {
		return triUnknown
	}
	switch op {
	case "=":
		return triOf(cmp == 0)
	case "<>", "!=":
		return triOf(cmp != 0)
	case "<":
		return triOf(cmp < 0)
	case ">":
		return triOf(cmp > 0)
	case "<=":
		return triOf(cmp <= 0)
	case ">=":
		return triOf(cmp >= 0)
	}
	return triUnknown
}

func columnName(n *pg.Node) string {
	c := n.GetColumnRef()
	if c == nil {
		return ""
	}
	return qualifiedName(c.Fields)
}

func constOperand(n *pg.Node) *pg.A_Const {
	switch v := n.GetNode().(type) {
	case *pg.Node_AConst:
		if v.AConst.Isnull {
			return nil
		}
		return v.AConst
	case *pg.Node_TypeCast:
		return constOperand(v.TypeCast.Arg)
	}
	return nil
}

// compareConst compares two constants the way PostgreSQL would for the
// common cases: numbers numerically, strings by bytes (equality only is
// collation-independent, ordering of strings is not folded).
func compareConst(a, b *pg.A_Const) (cmp int, ordered, ok bool) {
	af, aNum := constNumber(a)
	bf, bNum := constNumber(b)
	if aNum && bNum {
		switch {
		case af < bf:
			return -1, true, true
		case af > bf:
			return 1, true, true
		}
		return 0, true, true
	}
	as, aStr := constText(a)
	bs, bStr := constText(b)
	if aStr && bStr {
		if as == bs {
			return 0, false, true
		}
		return 1, false, true
	}
	return 0, false, false
}

func constNumber(c *pg.A_Const) (float64, bool) {
	switch v := c.Val.(type) {
	case *pg.A_Const_Ival:
		return float64(v.Ival.Ival), true
	case *pg.A_Const_Fval:
		f, err := strconv.ParseFloat(v.Fval.Fval, 64)
		return f, err == nil
	case *pg.A_Const_Sval:
		f, err := strconv.ParseFloat(strings.TrimSpace(v.Sval.Sval), 64)
		return f, err == nil
	}
	return 0, false
}

func constText(c *pg.A_Const) (string, bool) {
	switch v := c.Val.(type) {
	case *pg.A_Const_Sval:
		return v.Sval.Sval, true
	case *pg.A_Const_Boolval:
		return strconv.FormatBool(v.Boolval.Boolval), true
	}
	return "", false
}
