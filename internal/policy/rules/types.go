package rules

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
)

// CEL type names of the request variables.
const (
	typeIdentity = "enforcer.Identity"
	typeProcess  = "enforcer.Process"
	typeTarget   = "enforcer.Target"
	typeSQL      = "enforcer.SQL"
	typeHTTP     = "enforcer.HTTP"
)

// field is one declared field of a request object.
type field struct {
	name string
	typ  *types.Type
}

var (
	stringList = types.NewListType(types.StringType)

	identityFields = []field{
		{"subject", types.StringType}, {"email", types.StringType},
		{"groups", stringList}, {"provider", types.StringType},
	}
	processFields = []field{
		{"comm", types.StringType}, {"exe", types.StringType},
		{"pid", types.IntType}, {"uid", types.IntType},
	}
	targetFields = []field{
		{"name", types.StringType}, {"protocol", types.StringType},
		{"database", types.StringType}, {"user", types.StringType},
	}
	httpFields = []field{
		{"method", types.StringType}, {"path", types.StringType}, {"host", types.StringType},
		{"query", types.StringType}, {"headers", types.NewMapType(types.StringType, types.StringType)},
	}
)

// sqlField indexes the fields of enforcer.SQL.
type sqlField int

const (
	fKind sqlField = iota
	fKinds
	fObject
	fWrapper
	fText
	fReads
	fWrites
	fDDL
	fPrivilege
	fUnsafeIO
	fProcedural
	fSession
	fTransaction
	fMaintenance
	fSideEffects
	fLocks
	fSearchPath
	fUnknown
	fExecutes
	fReadOnly
	fTables
	fTablesRead
	fTablesWritten
	fFunctions
	fHasWhere
	fWhereIsConstant
	fStatementCount
	fPrepare
	fExecute
	fSetting
	fSettingValue
	fSettingMS
	nSQLFields
)

var sqlFields = [nSQLFields]field{
	fKind: {"kind", types.StringType}, fKinds: {"kinds", stringList},
	fObject: {"object", types.StringType}, fWrapper: {"wrapper", types.StringType},
	fText:  {"text", types.StringType},
	fReads: {"reads", types.BoolType}, fWrites: {"writes", types.BoolType},
	fDDL: {"ddl", types.BoolType}, fPrivilege: {"privilege", types.BoolType},
	fUnsafeIO: {"unsafe_io", types.BoolType}, fProcedural: {"procedural", types.BoolType},
	fSession: {"session", types.BoolType}, fTransaction: {"transaction", types.BoolType},
	fMaintenance: {"maintenance", types.BoolType}, fSideEffects: {"side_effects", types.BoolType},
	fLocks: {"locks", types.BoolType}, fSearchPath: {"search_path", types.BoolType},
	fUnknown: {"unknown", types.BoolType}, fExecutes: {"executes", types.BoolType},
	fReadOnly: {"read_only", types.BoolType},
	fTables:   {"tables", stringList}, fTablesRead: {"tables_read", stringList},
	fTablesWritten: {"tables_written", stringList}, fFunctions: {"functions", stringList},
	fHasWhere: {"has_where", types.BoolType}, fWhereIsConstant: {"where_is_constant", types.BoolType},
	fStatementCount: {"statement_count", types.IntType},
	fPrepare:        {"prepare", types.StringType}, fExecute: {"execute", types.StringType},
	fSetting: {"setting", types.StringType}, fSettingValue: {"setting_value", types.StringType},
	fSettingMS: {"setting_ms", types.IntType},
}

// structType is a declared object type and how to read its fields.
type structType struct {
	typ    *types.Type
	names  []string
	fields map[string]*types.FieldType
}

func newStructType(name string, fields []field, get func(obj any, i int) ref.Val) *structType {
	st := &structType{typ: types.NewObjectType(name), fields: make(map[string]*types.FieldType, len(fields))}
	for i, f := range fields {
		st.names = append(st.names, f.name)
		st.fields[f.name] = &types.FieldType{
			Type:    f.typ,
			IsSet:   func(any) bool { return true },
			GetFrom: func(obj any) (any, error) { return get(obj, i), nil },
		}
	}
	return st
}

// provider declares the request object types on top of CEL's registry, so
// that expressions are type-checked and field reads skip reflection.
type provider struct {
	types.Provider
	structs map[string]*structType
}

var (
	identityType = newStructType(typeIdentity, identityFields, getObject)
	processType  = newStructType(typeProcess, processFields, getObject)
	targetType   = newStructType(typeTarget, targetFields, getObject)
	httpType     = newStructType(typeHTTP, httpFields, getObject)
	sqlType      = newStructType(typeSQL, sqlFields[:], func(obj any, i int) ref.Val {
		return obj.(*sqlObject).get(sqlField(i))
	})
)

func newProvider() (*provider, error) {
	reg, err := types.NewRegistry()
	if err != nil {
		return nil, err
	}
	p := &provider{Provider: reg, structs: map[string]*structType{}}
	for _, st := range []*structType{identityType, processType, targetType, httpType, sqlType} {
		p.structs[st.typ.TypeName()] = st
	}
	return p, nil
}

func (p *provider) FindStructType(name string) (*types.Type, bool) {
	if st, ok := p.structs[name]; ok {
		return types.NewTypeTypeWithParam(st.typ), true
	}
	return p.Provider.FindStructType(name)
}

func (p *provider) FindStructFieldNames(name string) ([]string, bool) {
	if st, ok := p.structs[name]; ok {
		return st.names, true
	}
	return p.Provider.FindStructFieldNames(name)
}

func (p *provider) FindStructFieldType(name, fieldName string) (*types.FieldType, bool) {
	if st, ok := p.structs[name]; ok {
		ft, ok := st.fields[fieldName]
		return ft, ok
	}
	return p.Provider.FindStructFieldType(name, fieldName)
}

func (p *provider) NewValue(name string, fields map[string]ref.Val) ref.Val {
	if _, ok := p.structs[name]; ok {
		return types.NewErr("%s values cannot be constructed in a rule", name)
	}
	return p.Provider.NewValue(name, fields)
}

// object is a request object whose fields were converted once.
type object struct {
	typ    *types.Type
	fields []ref.Val
}

func getObject(obj any, i int) ref.Val { return obj.(*object).fields[i] }

func (o *object) ConvertToNative(reflect.Type) (any, error) {
	return nil, errors.New("request objects cannot be converted")
}
func (o *object) ConvertToType(t ref.Type) ref.Val {
	if t == types.TypeType {
		return o.typ
	}
	return types.NewErr("type conversion error from %s to %s", o.typ.TypeName(), t.TypeName())
}
func (o *object) Equal(other ref.Val) ref.Val { return types.Bool(o == other) }
func (o *object) Type() ref.Type              { return o.typ }
func (o *object) Value() any                  { return o }

func newObject(st *structType, vals ...ref.Val) *object {
	return &object{typ: st.typ, fields: vals}
}

func stringListVal(s []string) ref.Val {
	if len(s) == 0 {
		return emptyList
	}
	return types.NewStringList(types.DefaultTypeAdapter, s)
}

// refList converts once to CEL values, so membership tests do not
// allocate per element.
func refList(s []string) ref.Val {
	if len(s) == 0 {
		return emptyList
	}
	vals := make([]ref.Val, len(s))
	for i, v := range s {
		vals[i] = types.String(v)
	}
	return types.NewRefValList(types.DefaultTypeAdapter, vals)
}

var emptyList = types.NewStringList(types.DefaultTypeAdapter, nil)

// sqlObject exposes one classified statement; fields are converted when a
// rule reads them.
type sqlObject struct {
	st    *sqlclass.Statement
	count int
}

func (o *sqlObject) ConvertToNative(reflect.Type) (any, error) {
	return nil, errors.New("sql objects cannot be converted")
}
func (o *sqlObject) ConvertToType(t ref.Type) ref.Val {
	if t == types.TypeType {
		return sqlType.typ
	}
	return types.NewErr("type conversion error from %s to %s", typeSQL, t.TypeName())
}
func (o *sqlObject) Equal(other ref.Val) ref.Val { return types.Bool(o == other) }
func (o *sqlObject) Type() ref.Type              { return sqlType.typ }
func (o *sqlObject) Value() any                  { return o }

func (o *sqlObject) get(f sqlField) ref.Val {
	s := o.st
	switch f {
	case fKind:
		return str(string(s.Kind))
	case fKinds:
		return stringListVal(s.Kinds)
	case fObject:
		return str(s.Object)
	case fSetting:
		return str(s.Setting)
	case fSettingValue:
		return types.String(s.SettingValue)
	case fSettingMS:
		if ms, ok := s.SettingMillis(); ok {
			return types.Int(ms)
		}
		if s.SetsMillis() {
			// A timeout the server reads otherwise ('1e9', '010'): -1 would pass a block rule
			// on large values (sql.setting_ms > 5000) and an allow rule bounding them
			// (sql.setting_ms <= 5000). An error fails closed: the block rule applies, the
			// allow rule does not. The value stays out of the message: it is the agent's text.
			return types.NewErr("sql.setting_ms: the value given to %s is not read as the server reads it", s.Setting)
		}
		return types.Int(-1)
	case fWrapper:
		return str(s.Wrapper)
	case fText:
		return types.String(s.Text)
	case fReads:
		return types.Bool(s.Reads)
	case fWrites:
		return types.Bool(s.Writes)
	case fDDL:
		return types.Bool(s.DDL)
	case fPrivilege:
		return types.Bool(s.Privilege)
	case fUnsafeIO:
		return types.Bool(s.UnsafeIO)
	case fProcedural:
		return types.Bool(s.Procedural)
	case fSession:
		return types.Bool(s.Session)
	case fTransaction:
		return types.Bool(s.Transaction)
	case fMaintenance:
		return types.Bool(s.Maintenance)
	case fSideEffects:
		return types.Bool(s.SideEffects)
	case fLocks:
		return types.Bool(s.Locks)
	case fSearchPath:
		return types.Bool(s.SearchPath)
	case fUnknown:
		return types.Bool(s.Unknown)
	case fExecutes:
		return types.Bool(s.Executes)
	case fReadOnly:
		return types.Bool(s.ReadOnly())
	case fTables:
		return stringListVal(s.Tables)
	case fTablesRead:
		return stringListVal(s.TablesRead)
	case fTablesWritten:
		return stringListVal(s.TablesWritten)
	case fFunctions:
		return stringListVal(s.Functions)
	case fHasWhere:
		return types.Bool(s.HasWhere)
	case fWhereIsConstant:
		return types.Bool(s.WhereIsConstant)
	case fStatementCount:
		return types.Int(o.count)
	case fPrepare:
		return str(s.Prepare)
	case fExecute:
		return str(s.Execute)
	}
	return types.NewErr("no such field")
}

// interned holds CEL strings for the common values, so reading sql.kind
// does not allocate.
var interned = func() map[string]ref.Val {
	m := map[string]ref.Val{}
	for _, k := range []string{"", "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "COPY",
		"DROP", "TRUNCATE", "ALTER", "CREATE", "GRANT", "REVOKE", "SET", "RESET", "SHOW", "DO",
		"CALL", "EXECUTE", "DEALLOCATE", "DISCARD", "EXPLAIN", "BEGIN", "COMMIT", "ROLLBACK",
		"SAVEPOINT", "RELEASE", "VACUUM", "ANALYZE", "LOCK", "UNKNOWN", "DECLARE", "FETCH",
		"CLOSE", "LISTEN", "NOTIFY", "TABLE", "INDEX", "VIEW", "FUNCTION", "ROLE", "SCHEMA",
		"EXPLAIN ANALYZE", "PREPARE", "postgres", "http", "GET", "HEAD", "POST", "PUT", "PATCH",
		"OPTIONS", "/"} {
		m[k] = types.String(k)
	}
	return m
}()

func str(s string) ref.Val {
	if v, ok := interned[s]; ok {
		return v
	}
	return types.String(s)
}

// Schema describes the request variables rules can read, one field a line
// ("sql.kind: string"), for documentation and `enforcer policy` help.
func Schema() string {
	var b strings.Builder
	for _, v := range []struct {
		name   string
		fields []field
	}{
		{"identity", identityFields}, {"process", processFields}, {"target", targetFields},
		{"sql", sqlFields[:]}, {"http", httpFields},
	} {
		for _, f := range v.fields {
			fmt.Fprintf(&b, "%s.%s: %s\n", v.name, f.name, f.typ)
		}
	}
	return b.String()
}
