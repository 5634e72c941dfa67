package sqlclass

import (
	"fmt"
	"slices"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// DefaultMaxLen is the longest SQL text classified by default; longer text
// is Unknown. The parser's cost grows with input size and nesting, and the
// data path must not stall on a hostile megabyte of parentheses.
const DefaultMaxLen = 1 << 20

// Classify parses sql and classifies each statement, without caching. Text
// longer than DefaultMaxLen is Unknown.
func Classify(sql string) *Result {
	return classify(sql, DefaultMaxLen)
}

func classify(sql string, maxLen int) *Result {
	res, _ := classifyShape(sql, maxLen)
	return res
}

// shapeInfo is what classifyShape learned about whether its result may be
// reused for other texts of the same shape (see shape.go).
type shapeInfo struct {
	// valueDep is set when the classification read the value of a literal
	// (constant folding, set_config and SET arguments, EXPLAIN and COPY
	// options…): texts that differ only in literals may classify
	// differently.
	valueDep bool
	// start and end delimit the single statement's text (before trimming),
	// valid when the result has exactly one statement.
	start, end int
}

func classifyShape(sql string, maxLen int) (*Result, shapeInfo) {
	var info shapeInfo
	if len(sql) > maxLen {
		return unknownResult(sql, fmt.Sprintf("statement text too long to classify (%d bytes, limit %d)", len(sql), maxLen)), info
	}
	if err := checkDepth(sql); err != nil {
		return unknownResult(sql, err.Error()), info
	}
	tree, err := pg.Parse(sql)
	if err != nil {
		return unknownResult(sql, err.Error()), info
	}
	res := &Result{Statements: make([]Statement, 0, len(tree.Stmts)), text: sql}
	for _, raw := range tree.Stmts {
		st, dep := classifyStmt(raw.Stmt)
		st.Outputs, st.Names = columnsOf(raw.Stmt)
		info.valueDep = info.valueDep || dep
		info.start, info.end = stmtBounds(sql, raw)
		st.Text = strings.TrimSpace(sql[info.start:info.end])
		res.Statements = append(res.Statements, st)
	}
	return res, info
}

func unknownResult(sql, msg string) *Result {
	return &Result{
		Statements: []Statement{{
			Kind: KindUnknown, Kinds: []string{string(KindUnknown)},
			Unknown: true, Executes: true, Text: sql,
		}},
		ParseError: msg,
		text:       sql,
	}
}

// stmtBounds finds one statement in the string using the parser's byte
// offsets (a zero length means "to the end").
func stmtBounds(sql string, raw *pg.RawStmt) (start, end int) {
	start = int(raw.StmtLocation)
	if start < 0 || start > len(sql) {
		return 0, len(sql)
	}
	end = len(sql)
	if raw.StmtLen > 0 && start+int(raw.StmtLen) <= len(sql) {
		end = start + int(raw.StmtLen)
	}
	return start, end
}

// walker collects effects while visiting a statement's tree.
type walker struct {
	st *Statement

	kinds     []string
	reads     []string
	writes    []string
	cteScope  []string // CTE names in scope where the walk is (visitScoped): not tables
	funcs     []string
	funcClass funcClass
	cursors   []string // read by cursor_to_xml and the like (namedRead)

	// relWrite makes bare relations count as written: set for the target
	// list of DDL statements, cleared inside any query.
	relWrite bool

	dml        bool // an INSERT/UPDATE/DELETE/MERGE was seen
	modifies   bool // an UPDATE/DELETE/MERGE was seen (changes existing rows)
	dmlWhere   bool // every UPDATE/DELETE/MERGE had a condition
	dmlConst   bool // some UPDATE/DELETE/MERGE condition is constant
	selectInto bool
	execute    string
	locks      bool // a locking clause (FOR UPDATE/SHARE…) was seen

	explainDone bool // plain EXPLAIN filled the statement from its inner one

	// valueDep is set when a literal's value was read (see shapeInfo).
	valueDep bool
}

// classifyStmt classifies one statement; valueDep reports whether the
// result depends on the value of a literal.
func classifyStmt(n *pg.Node) (st Statement, valueDep bool) {
	st = Statement{Executes: true}
	w := &walker{st: &st, dmlWhere: true}
	w.top(n)
	w.finish()
	return st, w.valueDep
}

// top classifies the statement node itself, then walks it for nested
// effects (functions, relations, data-modifying CTEs).
func (w *walker) top(n *pg.Node) {
	st := w.st
	switch s := n.GetNode().(type) {
	case *pg.Node_SelectStmt:
		st.Kind = KindSelect
		st.Reads = true
		if s.SelectStmt.IntoClause != nil {
			st.Kind, st.Object = KindCreate, "TABLE"
			st.DDL, st.Writes = true, true
		}
		st.HasWhere, st.WhereIsConstant = selectWhere(s.SelectStmt, &w.valueDep)
		w.walk(n)
	case *pg.Node_InsertStmt:
		st.Kind = KindInsert
		if sel := s.InsertStmt.GetSelectStmt().GetSelectStmt(); sel != nil && len(sel.ValuesLists) == 0 {
			st.HasWhere, st.WhereIsConstant = selectWhere(sel, &w.valueDep)
		}
		w.walk(n)
	case *pg.Node_UpdateStmt:
		st.Kind = KindUpdate
		w.walk(n)
	case *pg.Node_DeleteStmt:
		st.Kind = KindDelete
		w.walk(n)
	case *pg.Node_MergeStmt:
		st.Kind = KindMerge
		w.walk(n)
	case *pg.Node_CopyStmt:
		w.copyStmt(s.CopyStmt)
	case *pg.Node_ExplainStmt:
		w.explain(s.ExplainStmt)
	case *pg.Node_PrepareStmt:
		w.top(s.PrepareStmt.Query)
		st.Prepare = s.PrepareStmt.Name
		st.Wrapper = WrapPrepare
		st.Executes = false
	case *pg.Node_ExecuteStmt:
		st.Kind = KindExecute
		w.walk(n)
	case *pg.Node_DeallocateStmt:
		st.Kind, st.Session = KindDeallocate, true
		st.Deallocate, st.DeallocateAll = s.DeallocateStmt.Name, s.DeallocateStmt.Isall
	case *pg.Node_DiscardStmt:
		st.Kind, st.Session = KindDiscard, true
		st.Object = strings.TrimPrefix(s.DiscardStmt.Target.String(), "DISCARD_")
		if s.DiscardStmt.Target == pg.DiscardMode_DISCARD_ALL {
			// DISCARD ALL includes SET SESSION AUTHORIZATION DEFAULT and
			// RESET ALL (search_path too), and drops every prepared statement.
			st.DeallocateAll, st.Privilege, st.SearchPath = true, true, true
		}
	case *pg.Node_VariableSetStmt:
		w.setStmt(s.VariableSetStmt)
	case *pg.Node_VariableShowStmt:
		st.Kind, st.Reads, st.Setting = KindShow, true, strings.ToLower(s.VariableShowStmt.Name)
	case *pg.Node_TransactionStmt:
		w.transaction(s.TransactionStmt)
	case *pg.Node_DoStmt:
		st.Kind, st.Procedural = KindDo, true
	case *pg.Node_CallStmt:
		st.Kind, st.Procedural = KindCall, true
		w.walk(n)
	case *pg.Node_DeclareCursorStmt:
		st.Kind, st.Reads = "DECLARE", true
		st.Cursor = s.DeclareCursorStmt.Portalname
		w.walk(n)
	case *pg.Node_FetchStmt:
		st.Kind, st.Reads = "FETCH", true
		st.Cursor = s.FetchStmt.Portalname
		if s.FetchStmt.Ismove {
			st.Kind = "MOVE"
		}
	case *pg.Node_ClosePortalStmt:
		st.Kind, st.Reads = "CLOSE", true
		st.Cursor = s.ClosePortalStmt.Portalname // "" for CLOSE ALL
	case *pg.Node_ListenStmt:
		st.Kind, st.Session = "LISTEN", true
	case *pg.Node_UnlistenStmt:
		st.Kind, st.Session = "UNLISTEN", true
	case *pg.Node_NotifyStmt:
		st.Kind, st.SideEffects = "NOTIFY", true
	case *pg.Node_LoadStmt:
		st.Kind, st.UnsafeIO, st.Procedural = "LOAD", true, true
	case *pg.Node_ConstraintsSetStmt:
		st.Kind, st.Transaction = KindSet, true
	case *pg.Node_LockStmt:
		st.Kind, st.Locks = KindLock, true
		w.ddlWalk(n)
	case *pg.Node_TruncateStmt:
		st.Kind, st.DDL, st.Writes = KindTruncate, true, true
		w.ddlWalk(n)
	case *pg.Node_DropStmt:
		w.drop(s.DropStmt)
	case *pg.Node_CreateTableAsStmt:
		c := s.CreateTableAsStmt
		st.Kind, st.DDL, st.Reads = KindCreate, true, true
		st.Object = objectName(c.Objtype)
		st.Writes = c.Into == nil || !c.Into.SkipData
		if sel := c.GetQuery().GetSelectStmt(); sel != nil {
			st.HasWhere, st.WhereIsConstant = selectWhere(sel, &w.valueDep)
		}
		w.ddlWalk(n)
	case *pg.Node_VacuumStmt:
		st.Kind, st.Maintenance = KindVacuum, true
		if !s.VacuumStmt.IsVacuumcmd {
			st.Kind = KindAnalyze
		}
		w.ddlWalk(n)
	case *pg.Node_ClusterStmt:
		st.Kind, st.Maintenance = "CLUSTER", true
		w.ddlWalk(n)
	case *pg.Node_ReindexStmt:
		st.Kind, st.Maintenance = "REINDEX", true
		w.ddlWalk(n)
	case *pg.Node_CheckPointStmt:
		st.Kind, st.Maintenance = "CHECKPOINT", true
	case *pg.Node_RefreshMatViewStmt:
		st.Kind, st.Maintenance, st.Writes, st.Object = "REFRESH", true, true, "MATVIEW"
		w.ddlWalk(n)
	case *pg.Node_GrantStmt:
		st.Kind, st.Privilege = KindGrant, true
		if !s.GrantStmt.IsGrant {
			st.Kind = KindRevoke
		}
		st.Object = objectName(s.GrantStmt.Objtype)
		w.ddlWalk(n)
	case *pg.Node_GrantRoleStmt:
		st.Kind, st.Privilege, st.Object = KindGrant, true, "ROLE"
		if !s.GrantRoleStmt.IsGrant {
			st.Kind = KindRevoke
		}
	case *pg.Node_AlterTableStmt:
		st.Kind, st.DDL = KindAlter, true
		st.Object = objectName(s.AlterTableStmt.Objtype)
		for _, c := range s.AlterTableStmt.Cmds {
			switch c.GetAlterTableCmd().GetSubtype() {
			case pg.AlterTableType_AT_ChangeOwner, pg.AlterTableType_AT_EnableRowSecurity,
				pg.AlterTableType_AT_DisableRowSecurity, pg.AlterTableType_AT_ForceRowSecurity,
				pg.AlterTableType_AT_NoForceRowSecurity:
				st.Privilege = true
			case pg.AlterTableType_AT_SetRelOptions, pg.AlterTableType_AT_ResetRelOptions,
				pg.AlterTableType_AT_ReplaceRelOptions:
				// ALTER VIEW (or ALTER TABLE on a view) SET/RESET (security_invoker,
				// security_barrier, check_option): whose privileges the view's reads
				// run with, and what leaks to functions or may be written through it.
				if hasViewSecurityOption(c.GetAlterTableCmd().GetDef().GetList().GetItems()) {
					st.Privilege = true
				}
			}
		}
		w.ddlWalk(n)
	case *pg.Node_CreateFunctionStmt:
		st.Kind, st.DDL, st.Procedural, st.Object = KindCreate, true, true, "FUNCTION"
		if s.CreateFunctionStmt.IsProcedure {
			st.Object = "PROCEDURE"
		}
		w.ddlWalk(n)
	case *pg.Node_CreateExtensionStmt:
		st.Kind, st.DDL, st.Procedural, st.Object = KindCreate, true, true, "EXTENSION"
		st.UnsafeIO = unsafeExtensions[strings.ToLower(s.CreateExtensionStmt.Extname)]
	case *pg.Node_AlterSystemStmt:
		st.Kind, st.DDL, st.Privilege, st.Object = KindAlter, true, true, "SYSTEM"
	default:
		w.generic(n)
	}
}

// genericStmt describes statements that need no special handling.
type genericStmt struct {
	kind                                  Kind
	object                                string
	privilege, unsafeIO, procedural, data bool
}

var genericStmts = map[string]genericStmt{
	"CreateStmt":                   {kind: KindCreate, object: "TABLE"},
	"ViewStmt":                     {kind: KindCreate, object: "VIEW"},
	"IndexStmt":                    {kind: KindCreate, object: "INDEX"},
	"CreateSchemaStmt":             {kind: KindCreate, object: "SCHEMA"},
	"CreateSeqStmt":                {kind: KindCreate, object: "SEQUENCE"},
	"AlterSeqStmt":                 {kind: KindAlter, object: "SEQUENCE"},
	"CreatedbStmt":                 {kind: KindCreate, object: "DATABASE"},
	"AlterDatabaseStmt":            {kind: KindAlter, object: "DATABASE"},
	"AlterDatabaseSetStmt":         {kind: KindAlter, object: "DATABASE"},
	"DropdbStmt":                   {kind: KindDrop, object: "DATABASE", data: true},
	"CreateTrigStmt":               {kind: KindCreate, object: "TRIGGER", procedural: true},
	"CreateEventTrigStmt":          {kind: KindCreate, object: "EVENT TRIGGER", procedural: true, privilege: true},
	"AlterEventTrigStmt":           {kind: KindAlter, object: "EVENT TRIGGER", procedural: true, privilege: true},
	"CreatePlangStmt":              {kind: KindCreate, object: "LANGUAGE", procedural: true},
	"AlterFunctionStmt":            {kind: KindAlter, object: "FUNCTION", procedural: true},
	"RuleStmt":                     {kind: KindCreate, object: "RULE", procedural: true},
	"CreateRoleStmt":               {kind: KindCreate, object: "ROLE", privilege: true},
	"AlterRoleStmt":                {kind: KindAlter, object: "ROLE", privilege: true},
	"AlterRoleSetStmt":             {kind: KindAlter, object: "ROLE", privilege: true},
	"DropRoleStmt":                 {kind: KindDrop, object: "ROLE", privilege: true},
	"AlterDefaultPrivilegesStmt":   {kind: KindAlter, object: "DEFAULT PRIVILEGES", privilege: true},
	"AlterOwnerStmt":               {kind: KindAlter, object: "OWNER", privilege: true},
	"ReassignOwnedStmt":            {kind: "REASSIGN", object: "OWNED", privilege: true},
	"DropOwnedStmt":                {kind: KindDrop, object: "OWNED", privilege: true, data: true},
	"SecLabelStmt":                 {kind: "SECURITY LABEL", privilege: true},
	"CreatePolicyStmt":             {kind: KindCreate, object: "POLICY", privilege: true},
	"AlterPolicyStmt":              {kind: KindAlter, object: "POLICY", privilege: true},
	"CreateFdwStmt":                {kind: KindCreate, object: "FOREIGN DATA WRAPPER", unsafeIO: true},
	"AlterFdwStmt":                 {kind: KindAlter, object: "FOREIGN DATA WRAPPER", unsafeIO: true},
	"CreateForeignServerStmt":      {kind: KindCreate, object: "SERVER", unsafeIO: true},
	"AlterForeignServerStmt":       {kind: KindAlter, object: "SERVER", unsafeIO: true},
	"CreateForeignTableStmt":       {kind: KindCreate, object: "FOREIGN TABLE", unsafeIO: true},
	"CreateUserMappingStmt":        {kind: KindCreate, object: "USER MAPPING", unsafeIO: true, privilege: true},
	"AlterUserMappingStmt":         {kind: KindAlter, object: "USER MAPPING", unsafeIO: true, privilege: true},
	"DropUserMappingStmt":          {kind: KindDrop, object: "USER MAPPING"},
	"ImportForeignSchemaStmt":      {kind: "IMPORT FOREIGN SCHEMA", unsafeIO: true},
	"CreateSubscriptionStmt":       {kind: KindCreate, object: "SUBSCRIPTION", unsafeIO: true},
	"AlterSubscriptionStmt":        {kind: KindAlter, object: "SUBSCRIPTION", unsafeIO: true},
	"DropSubscriptionStmt":         {kind: KindDrop, object: "SUBSCRIPTION"},
	"CreatePublicationStmt":        {kind: KindCreate, object: "PUBLICATION"},
	"AlterPublicationStmt":         {kind: KindAlter, object: "PUBLICATION"},
	"CreateTableSpaceStmt":         {kind: KindCreate, object: "TABLESPACE", unsafeIO: true},
	"DropTableSpaceStmt":           {kind: KindDrop, object: "TABLESPACE"},
	"AlterTableSpaceOptionsStmt":   {kind: KindAlter, object: "TABLESPACE"},
	"AlterTableMoveAllStmt":        {kind: KindAlter, object: "TABLE"},
	"AlterExtensionStmt":           {kind: KindAlter, object: "EXTENSION", procedural: true},
	"AlterExtensionContentsStmt":   {kind: KindAlter, object: "EXTENSION", procedural: true},
	"CommentStmt":                  {kind: "COMMENT"},
	"RenameStmt":                   {kind: KindAlter, object: "NAME"},
	"AlterObjectSchemaStmt":        {kind: KindAlter, object: "SCHEMA"},
	"AlterObjectDependsStmt":       {kind: KindAlter, object: "EXTENSION"},
	"AlterDomainStmt":              {kind: KindAlter, object: "DOMAIN"},
	"CreateDomainStmt":             {kind: KindCreate, object: "DOMAIN"},
	"DefineStmt":                   {kind: KindCreate, object: "DEFINITION"},
	"CompositeTypeStmt":            {kind: KindCreate, object: "TYPE"},
	"CreateEnumStmt":               {kind: KindCreate, object: "TYPE"},
	"CreateRangeStmt":              {kind: KindCreate, object: "TYPE"},
	"AlterEnumStmt":                {kind: KindAlter, object: "TYPE"},
	"AlterTypeStmt":                {kind: KindAlter, object: "TYPE"},
	"CreateStatsStmt":              {kind: KindCreate, object: "STATISTICS"},
	"AlterStatsStmt":               {kind: KindAlter, object: "STATISTICS"},
	"CreateCastStmt":               {kind: KindCreate, object: "CAST"},
	"CreateConversionStmt":         {kind: KindCreate, object: "CONVERSION"},
	"CreateTransformStmt":          {kind: KindCreate, object: "TRANSFORM", procedural: true},
	"CreateOpClassStmt":            {kind: KindCreate, object: "OPERATOR CLASS"},
	"CreateOpFamilyStmt":           {kind: KindCreate, object: "OPERATOR FAMILY"},
	"AlterOpFamilyStmt":            {kind: KindAlter, object: "OPERATOR FAMILY"},
	"AlterOperatorStmt":            {kind: KindAlter, object: "OPERATOR"},
	"CreateAmStmt":                 {kind: KindCreate, object: "ACCESS METHOD"},
	"AlterCollationStmt":           {kind: KindAlter, object: "COLLATION"},
	"AlterDatabaseRefreshCollStmt": {kind: KindAlter, object: "DATABASE"},
	"AlterTsdictionaryStmt":        {kind: KindAlter, object: "TEXT SEARCH DICTIONARY"},
	"AlterTsconfigurationStmt":     {kind: KindAlter, object: "TEXT SEARCH CONFIGURATION"},
	"ReplicaIdentityStmt":          {kind: KindAlter, object: "TABLE"},
}

// generic handles DDL through the table above; anything else is Unknown.
func (w *walker) generic(n *pg.Node) {
	st := w.st
	m := n.ProtoReflect()
	od := m.WhichOneof(m.Descriptor().Oneofs().Get(0))
	name := ""
	if od != nil {
		name = string(od.Message().Name())
	}
	g, ok := genericStmts[name]
	if !ok {
		st.Kind, st.Unknown = KindUnknown, true
		if name != "" {
			st.Object = name
		}
		w.walk(n)
		return
	}
	st.Kind, st.Object, st.DDL = g.kind, g.object, true
	st.Privilege, st.UnsafeIO, st.Procedural, st.Writes = g.privilege, g.unsafeIO, g.procedural, g.data
	w.refineGeneric(n)
	w.ddlWalk(n)
}

// refineGeneric sets what a statement of genericStmts does beyond its entry.
func (w *walker) refineGeneric(n *pg.Node) {
	st := w.st
	st.Credentials = givesCredentials(n)
	switch s := n.GetNode().(type) {
	case *pg.Node_AlterDatabaseSetStmt:
		// Applied at every later login of every role to the database (SET role = …,
		// search_path ahead of pg_catalog for the application's sessions): like ALTER ROLE … SET.
		st.Privilege = true
		st.SearchPath = changesSearchPath(s.AlterDatabaseSetStmt.Setstmt)
	case *pg.Node_AlterRoleSetStmt:
		// ALTER ROLE r [IN DATABASE d] SET …: privilege by its table entry.
		st.SearchPath = changesSearchPath(s.AlterRoleSetStmt.Setstmt)
	case *pg.Node_RenameStmt:
		switch s.RenameStmt.RenameType {
		case pg.ObjectType_OBJECT_ROLE, pg.ObjectType_OBJECT_POLICY:
			// ALTER ROLE/USER/GROUP … RENAME TO (what grants, logins and the proxy's
			// upstream user name), ALTER POLICY … RENAME TO.
			st.Privilege = true
		}
	case *pg.Node_CreateSchemaStmt:
		c := s.CreateSchemaStmt
		switch c.Authrole.GetRoletype() {
		case pg.RoleSpecType_ROLE_SPEC_TYPE_UNDEFINED, pg.RoleSpecType_ROLESPEC_CURRENT_USER, pg.RoleSpecType_ROLESPEC_CURRENT_ROLE:
			// No AUTHORIZATION, or the owner it has anyway.
		default:
			// CREATE SCHEMA … AUTHORIZATION r: an object owned by another role, whose
			// functions and tables there may then be run and read as r.
			st.Privilege = true
		}
		// Its elements (CREATE TABLE/VIEW/INDEX/SEQUENCE/TRIGGER, GRANT) run as statements
		// of their own.
		for _, e := range c.SchemaElts {
			inner, dep := classifyStmt(e)
			w.valueDep = w.valueDep || dep
			st.Writes = st.Writes || inner.Writes
			st.Privilege = st.Privilege || inner.Privilege
			st.UnsafeIO = st.UnsafeIO || inner.UnsafeIO
			st.Procedural = st.Procedural || inner.Procedural
			st.Session = st.Session || inner.Session
			st.SideEffects = st.SideEffects || inner.SideEffects
			st.Locks = st.Locks || inner.Locks
			st.SearchPath = st.SearchPath || inner.SearchPath
			st.Unknown = st.Unknown || inner.Unknown
		}
	case *pg.Node_ViewStmt:
		// CREATE OR REPLACE VIEW … WITH (security_invoker = …) changes an existing view's
		// options as ALTER VIEW … SET does.
		if s.ViewStmt.Replace && hasViewSecurityOption(s.ViewStmt.Options) {
			st.Privilege = true
		}
	}
}

// viewSecurityOptions are the reloptions of a view that decide whose privileges its reads run
// with, whether its conditions are applied before functions of the query see the rows, and
// what may be written through it.
var viewSecurityOptions = map[string]bool{
	"security_invoker": true, "security_barrier": true, "check_option": true,
}

// hasViewSecurityOption reports whether a list of DefElem options names one of
// viewSecurityOptions (namespaced options, which views do not have, are included).
func hasViewSecurityOption(opts []*pg.Node) bool {
	for _, o := range opts {
		if d := o.GetDefElem(); d != nil && viewSecurityOptions[strings.ToLower(d.Defname)] {
			return true
		}
	}
	return false
}

// changesSearchPath reports whether a SET/RESET (of ALTER ROLE/DATABASE … SET, or a statement of
// its own) changes search_path: by name (SET SCHEMA is SET search_path to the parser) or
// RESET ALL.
func changesSearchPath(v *pg.VariableSetStmt) bool {
	if v == nil {
		return false
	}
	switch v.Kind {
	case pg.VariableSetKind_VAR_RESET_ALL:
		return true
	case pg.VariableSetKind_VAR_SET_MULTI:
		return false
	}
	return strings.EqualFold(v.Name, "search_path")
}

func objectName(t pg.ObjectType) string {
	s := strings.TrimPrefix(t.String(), "OBJECT_")
	if s == "OBJECT_TYPE_UNDEFINED" {
		return ""
	}
	return strings.ReplaceAll(s, "_", " ")
}

func (w *walker) copyStmt(c *pg.CopyStmt) {
	st := w.st
	st.Kind = KindCopy
	// The file name is a string literal, and '' cannot be told from
	// STDIN/STDOUT in the tree; options are literals too.
	w.valueDep = true
	if c.IsProgram || c.Filename != "" {
		// COPY … PROGRAM runs a shell command on the server; a file name
		// reads or writes the server's file system.
		st.UnsafeIO = true
	}
	switch {
	case c.Query != nil:
		// COPY (query) TO: the query runs, whatever it is.
		st.Reads = true
		if sel := c.Query.GetSelectStmt(); sel != nil {
			st.HasWhere, st.WhereIsConstant = selectWhere(sel, &w.valueDep)
		}
		w.walk(c.Query)
	case c.IsFrom:
		st.Writes = true
		w.addRel(c.Relation, true)
	default:
		st.Reads = true
		w.addRel(c.Relation, false)
	}
	for _, o := range c.Options {
		w.walk(o)
	}
	if c.WhereClause != nil {
		w.walk(c.WhereClause)
	}
}

func (w *walker) explain(e *pg.ExplainStmt) {
	st := w.st
	analyze := false
	for _, o := range e.Options {
		d := o.GetDefElem()
		if d != nil && strings.EqualFold(d.Defname, "analyze") {
			analyze = defElemTrue(d, &w.valueDep)
		}
	}
	if analyze {
		// EXPLAIN ANALYZE runs its statement: judge it as that statement.
		w.top(e.Query)
		st.Wrapper = WrapExplainAnalyze
		return
	}
	// Plain EXPLAIN plans without executing: a read. Function classes are
	// kept (the planner folds some calls), data effects are not.
	inner, dep := classifyStmt(e.Query)
	w.valueDep = w.valueDep || dep
	*st = Statement{
		Kind:            KindExplain,
		Kinds:           append([]string{string(KindExplain)}, inner.Kinds...),
		Wrapper:         WrapExplain,
		Reads:           true,
		Privilege:       inner.Privilege,
		UnsafeIO:        inner.UnsafeIO,
		Procedural:      inner.Procedural,
		SideEffects:     inner.SideEffects,
		Unknown:         inner.Unknown,
		Tables:          inner.Tables,
		TablesRead:      inner.Tables,
		Functions:       inner.Functions,
		HasWhere:        inner.HasWhere,
		WhereIsConstant: inner.WhereIsConstant,
		Execute:         inner.Execute,
		CursorsRead:     inner.CursorsRead, // the planner may call a stable function to estimate
	}
	w.explainDone = true
}

// defElemTrue reads a boolean option such as ANALYZE, ANALYZE true,
// ANALYZE off. Anything unreadable counts as true (the strict reading).
// An argument may be a literal (ANALYZE 'off', ANALYZE 0), so reading one
// sets *valueDep.
func defElemTrue(d *pg.DefElem, valueDep *bool) bool {
	if d.Arg == nil {
		return true
	}
	*valueDep = true
	switch a := d.Arg.GetNode().(type) {
	case *pg.Node_Boolean:
		return a.Boolean.Boolval
	case *pg.Node_Integer:
		return a.Integer.Ival != 0
	case *pg.Node_String_:
		v, ok := parseBool(a.String_.Sval)
		return !ok || v
	case *pg.Node_AConst:
		if s, ok := a.AConst.Val.(*pg.A_Const_Sval); ok {
			v, ok := parseBool(s.Sval.Sval)
			return !ok || v
		}
		if b, ok := a.AConst.Val.(*pg.A_Const_Boolval); ok {
			return b.Boolval.Boolval
		}
		if i, ok := a.AConst.Val.(*pg.A_Const_Ival); ok {
			return i.Ival.Ival != 0
		}
	}
	return true
}

// parseBool reads PostgreSQL boolean spellings.
func parseBool(s string) (v, ok bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "t", "true", "y", "yes", "on", "1":
		return true, true
	case "f", "false", "n", "no", "off", "0":
		return false, true
	}
	return false, false
}

func (w *walker) setStmt(v *pg.VariableSetStmt) {
	st := w.st
	name := strings.ToLower(v.Name)
	st.Kind, st.Session, st.Setting = KindSet, true, name
	st.SearchPath = changesSearchPath(v)
	switch v.Kind {
	case pg.VariableSetKind_VAR_RESET:
		st.Kind = KindReset
	case pg.VariableSetKind_VAR_RESET_ALL:
		// RESET ALL returns role to the session user.
		st.Kind, st.Privilege, st.Setting = KindReset, true, "all"
		return
	case pg.VariableSetKind_VAR_SET_MULTI:
		// SET TRANSACTION …, SET SESSION CHARACTERISTICS AS TRANSACTION …
		st.Session, st.Transaction = name != "transaction", true
		st.Privilege = asksReadWrite(v.Args)
		return
	}
	if privilegedSettings[name] {
		st.Privilege = true
	}
	if v.Kind == pg.VariableSetKind_VAR_SET_VALUE {
		// Rules may read the value (sql.setting_value), so no other text of this shape may
		// share the classification.
		w.valueDep = true
		st.SettingValue = settingValue(v.Args)
	}
	if relevant, _ := readerSettingSafe(name, ""); !relevant {
		return
	}
	// The value of a reader setting decides; it is usually a literal.
	value := ""
	if len(v.Args) > 0 {
		value = constString(v.Args[0])
	}
	if _, safe := readerSettingSafe(name, value); !safe && v.Kind == pg.VariableSetKind_VAR_SET_VALUE {
		// After this, the proxy's parser would read statements differently
		// from the server (standard_conforming_strings=off, SJIS…).
		st.Unknown = true
	}
}

// settingValue is the value SET gives a setting: its constants joined as the server joins a
// list ("" if any is not a constant).
func settingValue(args []*pg.Node) string {
	var b strings.Builder
	for i, a := range args {
		if !isConst(a) {
			return ""
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(constString(a))
	}
	return b.String()
}

// asksReadWrite reports whether transaction modes (BEGIN …, SET TRANSACTION …) ask for READ
// WRITE, which lifts a read-only default the DBA set on the role: a privilege change.
func asksReadWrite(modes []*pg.Node) bool {
	for _, m := range modes {
		if d := m.GetDefElem(); d != nil && d.Defname == "transaction_read_only" && constString(d.Arg) == "0" {
			return true
		}
	}
	return false
}

func (w *walker) transaction(t *pg.TransactionStmt) {
	st := w.st
	st.Transaction = true
	switch t.Kind {
	case pg.TransactionStmtKind_TRANS_STMT_BEGIN, pg.TransactionStmtKind_TRANS_STMT_START:
		st.Kind = KindBegin
		st.Privilege = asksReadWrite(t.Options)
	case pg.TransactionStmtKind_TRANS_STMT_COMMIT:
		st.Kind = KindCommit
	case pg.TransactionStmtKind_TRANS_STMT_ROLLBACK, pg.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		st.Kind = KindRollback
	case pg.TransactionStmtKind_TRANS_STMT_SAVEPOINT:
		st.Kind = KindSavepoint
	case pg.TransactionStmtKind_TRANS_STMT_RELEASE:
		st.Kind = KindRelease
	case pg.TransactionStmtKind_TRANS_STMT_PREPARE:
		// Two-phase commit leaves a transaction (and its locks) behind.
		st.Kind, st.Writes = "PREPARE TRANSACTION", true
	case pg.TransactionStmtKind_TRANS_STMT_COMMIT_PREPARED:
		st.Kind, st.Writes = "COMMIT PREPARED", true
	case pg.TransactionStmtKind_TRANS_STMT_ROLLBACK_PREPARED:
		st.Kind, st.Writes = "ROLLBACK PREPARED", true
	default:
		st.Kind, st.Unknown = KindUnknown, true
	}
}

// dataObjects are object types whose DROP destroys rows.
var dataObjects = map[pg.ObjectType]bool{
	pg.ObjectType_OBJECT_TABLE: true, pg.ObjectType_OBJECT_MATVIEW: true,
	pg.ObjectType_OBJECT_SCHEMA: true, pg.ObjectType_OBJECT_FOREIGN_TABLE: true,
	pg.ObjectType_OBJECT_SEQUENCE: true, pg.ObjectType_OBJECT_DATABASE: true,
	pg.ObjectType_OBJECT_LARGEOBJECT: true,
}

// relObjects are object types whose names are relations.
var relObjects = map[pg.ObjectType]bool{
	pg.ObjectType_OBJECT_TABLE: true, pg.ObjectType_OBJECT_MATVIEW: true,
	pg.ObjectType_OBJECT_VIEW: true, pg.ObjectType_OBJECT_FOREIGN_TABLE: true,
	pg.ObjectType_OBJECT_SEQUENCE: true, pg.ObjectType_OBJECT_INDEX: true,
}

func (w *walker) drop(d *pg.DropStmt) {
	st := w.st
	st.Kind, st.DDL = KindDrop, true
	st.Object = objectName(d.RemoveType)
	st.Writes = dataObjects[d.RemoveType] || d.Behavior == pg.DropBehavior_DROP_CASCADE
	switch d.RemoveType {
	case pg.ObjectType_OBJECT_POLICY:
		st.Privilege = true
	case pg.ObjectType_OBJECT_FUNCTION, pg.ObjectType_OBJECT_PROCEDURE, pg.ObjectType_OBJECT_ROUTINE,
		pg.ObjectType_OBJECT_TRIGGER, pg.ObjectType_OBJECT_EVENT_TRIGGER:
		st.Procedural = true
	}
	if relObjects[d.RemoveType] {
		for _, o := range d.Objects {
			items := o.GetList().GetItems()
			if name := qualifiedName(items); name != "" {
				w.addTable(name, items[len(items)-1].GetString_().GetSval(), true)
			}
		}
	}
}

// qualifiedName joins a list of String nodes with dots.
func qualifiedName(items []*pg.Node) string {
	var b strings.Builder
	for i, it := range items {
		s := it.GetString_()
		if s == nil {
			return ""
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s.Sval)
	}
	return b.String()
}

// constString returns the text of a string, number or boolean constant, or
// "" when the node is not a constant.
func constString(n *pg.Node) string {
	switch v := n.GetNode().(type) {
	case *pg.Node_AConst:
		switch c := v.AConst.Val.(type) {
		case *pg.A_Const_Sval:
			return c.Sval.Sval
		case *pg.A_Const_Ival:
			return fmt.Sprint(c.Ival.Ival)
		case *pg.A_Const_Fval:
			return c.Fval.Fval
		case *pg.A_Const_Boolval:
			if c.Boolval.Boolval {
				return "true"
			}
			return "false"
		}
	case *pg.Node_TypeCast:
		return constString(v.TypeCast.Arg)
	case *pg.Node_String_:
		return v.String_.Sval
	}
	return ""
}

func isConst(n *pg.Node) bool {
	switch v := n.GetNode().(type) {
	case *pg.Node_AConst:
		return true
	case *pg.Node_TypeCast:
		return isConst(v.TypeCast.Arg)
	}
	return false
}

// ddlWalk walks a DDL statement: relations outside a query are its targets.
func (w *walker) ddlWalk(n *pg.Node) {
	w.relWrite = true
	w.walk(n)
	w.relWrite = false
}

// walk visits every message below n.
func (w *walker) walk(n *pg.Node) {
	if n == nil {
		return
	}
	w.visit(n.ProtoReflect())
}

func (w *walker) visit(m protoreflect.Message) {
	switch x := m.Interface().(type) {
	case *pg.RangeVar:
		w.addRel(x, w.relWrite)
		return
	case *pg.FuncCall:
		w.addFunc(x)
	case *pg.JsonFuncExpr, *pg.JsonScalarExpr, *pg.JsonSerializeExpr, *pg.JsonParseExpr,
		*pg.JsonObjectConstructor, *pg.JsonArrayConstructor, *pg.JsonArrayAgg, *pg.MergeSupportFunc:
		w.addOlderServerCall(x)
	case *pg.A_Expr:
		switch x.Kind {
		case pg.A_Expr_Kind_AEXPR_BETWEEN, pg.A_Expr_Kind_AEXPR_NOT_BETWEEN,
			pg.A_Expr_Kind_AEXPR_BETWEEN_SYM, pg.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM:
			// Named by keyword; PostgreSQL compares with >= and <=.
		default:
			w.funcClass |= classifyOperator(x.Name)
		}
	case *pg.SubLink:
		w.funcClass |= classifyOperator(x.OperName)
	case *pg.SortBy:
		w.funcClass |= classifyOperator(x.UseOp)
	case *pg.RangeTableSample:
		if !builtinSampleMethod(x.Method) {
			w.funcClass |= fnProcedural
		}
	case *pg.InsertStmt:
		w.addKind(KindInsert)
		w.dml = true
		w.addRel(x.Relation, true)
		w.settingsTarget(x.Relation)
		w.visitScoped(m, x.WithClause, "relation")
		return
	case *pg.UpdateStmt:
		w.addKind(KindUpdate)
		w.modifying(x.WhereClause)
		w.addRel(x.Relation, true)
		w.settingsTarget(x.Relation)
		w.visitScoped(m, x.WithClause, "relation")
		return
	case *pg.DeleteStmt:
		w.addKind(KindDelete)
		w.modifying(x.WhereClause)
		w.addRel(x.Relation, true)
		w.settingsTarget(x.Relation)
		w.visitScoped(m, x.WithClause, "relation")
		return
	case *pg.MergeStmt:
		w.addKind(KindMerge)
		w.modifying(x.JoinCondition)
		w.addRel(x.Relation, true)
		w.settingsTarget(x.Relation)
		w.visitScoped(m, x.WithClause, "relation")
		return
	case *pg.SelectStmt:
		w.addKind(KindSelect)
		if len(x.LockingClause) > 0 {
			w.locks = true
		}
		saved := w.relWrite
		w.relWrite = false
		if x.IntoClause != nil {
			w.selectInto = true
			w.addRel(x.IntoClause.Rel, true)
			w.visitScoped(m, x.WithClause, "into_clause")
		} else {
			w.visitScoped(m, x.WithClause)
		}
		w.relWrite = saved
		return
	case *pg.IntoClause:
		// CREATE TABLE AS / CREATE MATERIALIZED VIEW target.
		w.addRel(x.Rel, true)
		w.visitFields(m, "rel")
		return
	case *pg.ExecuteStmt:
		w.execute = x.Name
	}
	w.visitFields(m)
}

// visitFields walks m's message fields (see eachChild) but skip.
func (w *walker) visitFields(m protoreflect.Message, skip ...protoreflect.Name) {
	eachChild(m, w, skip...)
}

// visitScoped walks m's message fields but skip, m being a statement with the WITH clause with:
// each CTE's query sees the CTEs before it (every one of them under RECURSIVE), the rest of m
// sees them all, as PostgreSQL resolves names. An unqualified relation named like a CTE in scope
// is that CTE; anywhere else (a CTE's query before it is defined, a query beside the one that
// defines it) the same name is a table, which rules on table names must see.
func (w *walker) visitScoped(m protoreflect.Message, with *pg.WithClause, skip ...protoreflect.Name) {
	if with == nil {
		w.visitFields(m, skip...)
		return
	}
	base := len(w.cteScope)
	names := make([]string, 0, len(with.Ctes))
	for _, c := range with.Ctes {
		if cte := c.GetCommonTableExpr(); cte != nil {
			names = append(names, cte.Ctename)
		}
	}
	for i, c := range with.Ctes {
		w.cteScope = w.cteScope[:base]
		if with.Recursive {
			w.cteScope = append(w.cteScope, names...)
		} else {
			w.cteScope = append(w.cteScope, names[:min(i, len(names))]...)
		}
		w.walk(c)
	}
	w.cteScope = append(w.cteScope[:base], names...)
	w.visitFields(m, append(skip, "with_clause")...)
	w.cteScope = w.cteScope[:base]
}

func (w *walker) addKind(k Kind) {
	for _, s := range w.kinds {
		if s == string(k) {
			return
		}
	}
	w.kinds = append(w.kinds, string(k))
}

// modifying records an UPDATE/DELETE/MERGE and its condition.
func (w *walker) modifying(cond *pg.Node) {
	w.dml, w.modifies = true, true
	if cond == nil {
		w.dmlWhere = false
		return
	}
	if cond.GetCurrentOfExpr() != nil {
		return // WHERE CURRENT OF cursor: one row
	}
	if constantCondition(cond, &w.valueDep) {
		w.dmlConst = true
	}
}

func (w *walker) addRel(r *pg.RangeVar, write bool) {
	if r == nil || r.Relname == "" {
		return
	}
	if !write && r.Schemaname == "" && slices.Contains(w.cteScope, r.Relname) {
		return // a CTE of the statement, not a table
	}
	name := r.Relname
	if r.Schemaname != "" {
		name = r.Schemaname + "." + name
		if r.Catalogname != "" {
			name = r.Catalogname + "." + name
		}
	}
	w.addTable(name, r.Relname, write)
}

// addTable records a relation as written and, when qualified, by its bare
// name too: a rule naming "users" must also see "public.users".
func (w *walker) addTable(name, bare string, write bool) {
	list := &w.reads
	if write {
		list = &w.writes
	}
	*list = append(*list, name)
	if bare != name {
		*list = append(*list, bare)
	}
}

func (w *walker) addFunc(f *pg.FuncCall) {
	n := len(f.Funcname)
	if n == 0 {
		w.funcClass |= fnProcedural // cannot happen: a call names a function
		return
	}
	full := qualifiedName(f.Funcname)
	bare := f.Funcname[n-1].GetString_().GetSval()
	if bare == "" {
		w.funcClass |= fnProcedural
		return
	}
	if full != bare && full != "" {
		w.funcs = append(w.funcs, full)
	}
	w.funcs = append(w.funcs, bare)
	schema := ""
	if n > 1 {
		// db.schema.f() names the schema second to last.
		schema = f.Funcname[n-2].GetString_().GetSval()
		if schema == "" {
			schema = "?" // not a String node: never a known schema
		}
	}
	c := classifyCall(schema, bare)
	w.funcClass |= c
	if c&(fnTableArg|fnCursorArg) != 0 {
		w.namedRead(f, c)
	}
	if c&fnSession != 0 {
		// set_config(name, value, is_local): SET by another name.
		if len(f.Args) == 0 || !isConst(f.Args[0]) {
			w.unknownSetting()
			return
		}
		// The setting's name is a literal: set_config('role', …) and
		// set_config('application_name', …) have the same shape.
		w.valueDep = true
		name := strings.ToLower(constString(f.Args[0]))
		if privilegedSettings[name] {
			w.st.Privilege = true
		}
		if name == "search_path" {
			w.st.SearchPath = true
		}
		if relevant, _ := readerSettingSafe(name, ""); relevant {
			safe := false
			if len(f.Args) > 1 && isConst(f.Args[1]) {
				_, safe = readerSettingSafe(name, constString(f.Args[1]))
			}
			if !safe {
				w.st.Unknown = true
			}
		}
	}
}

// unknownSetting records a change of a setting whose name is not known (set_config with a
// computed name, a write to pg_settings): it may be role or session_authorization (Privilege),
// search_path, or a setting that changes how later statements are read
// (standard_conforming_strings, client_encoding: Unknown). Assume the worst of each.
func (w *walker) unknownSetting() {
	w.funcClass |= fnSession
	w.st.Privilege, w.st.SearchPath, w.st.Unknown = true, true, true
}

// settingsTarget: pg_settings has a rule that turns UPDATE into set_config(name, setting)
// (INSERT and DELETE fail, unless a rule of the session's own is added). The setting's name is
// in the WHERE clause, not read here. Unqualified, pg_settings is pg_catalog's (pg_catalog is
// searched first unless search_path names it later, which is itself a SearchPath change); a
// view of another name over pg_settings is not seen.
func (w *walker) settingsTarget(r *pg.RangeVar) {
	if r != nil && r.Relname == "pg_settings" && (r.Schemaname == "" || r.Schemaname == "pg_catalog") {
		w.unknownSetting()
	}
}

// finish turns what the walk collected into the statement's fields.
func (w *walker) finish() {
	st := w.st
	if w.explainDone {
		return
	}
	st.Kinds = append(make([]string, 0, 1+len(w.kinds)), string(st.Kind))
	for _, k := range w.kinds {
		if k != string(st.Kind) {
			st.Kinds = append(st.Kinds, k)
		}
	}
	if w.dml {
		st.Writes = true
	}
	if w.modifies {
		st.HasWhere, st.WhereIsConstant = w.dmlWhere, w.dmlConst
	}
	if w.funcClass&fnUnsafeIO != 0 {
		st.UnsafeIO = true
	}
	if w.funcClass&fnSideEffect != 0 {
		st.SideEffects, st.Writes = true, true
	}
	if st.SideEffects {
		st.Writes = true
	}
	if w.funcClass&fnProcedural != 0 {
		st.Procedural = true
	}
	if w.funcClass&fnSession != 0 {
		st.Session = true
	}
	if w.locks {
		st.Locks = true
	}
	if w.execute != "" {
		st.Execute = w.execute
	}
	st.Functions = dedup(w.funcs)
	st.CursorsRead = dedup(w.cursors)
	st.TablesWritten = dedup(w.writes)
	st.TablesRead = dedup(w.reads)
	if len(st.TablesRead) > 0 {
		st.Reads = true
	}
	if len(st.TablesWritten) > 0 || len(st.TablesRead) > 0 {
		st.Tables = dedup(append(append(make([]string, 0, len(st.TablesWritten)+len(st.TablesRead)), st.TablesWritten...), st.TablesRead...))
	}
}

// dedup returns s in first-seen order without repeats, in a slice of its own; nil if s is
// empty.
func dedup[T comparable](s []T) []T {
	var out []T
	var seen map[T]bool // past a few, a linear search per item would make this quadratic
	for _, v := range s {
		if seen != nil {
			if seen[v] {
				continue
			}
			seen[v] = true
		} else if slices.Contains(out, v) {
			continue
		}
		if out == nil {
			out = make([]T, 0, len(s))
		}
		out = append(out, v)
		if len(out) == 16 && seen == nil {
			seen = make(map[T]bool, len(s))
			for _, o := range out {
				seen[o] = true
			}
		}
	}
	return out
}
