package mask

import "strings"

// Top-level domains an e-mail address may end in. A compact embedded subset of the public suffix
// list: every country-code TLD, the original generic TLDs and the new gTLDs commonly seen in
// addresses. Addresses under other TLDs (or fake ones such as .local, .invalid, .test, .internal)
// are not treated as e-mail, so the detector stays precise; a deployment that needs a missing TLD
// can add it through Config.ExtraTLDs.
const tldList = `
com net org edu gov mil int info biz name pro aero coop museum mobi asia tel travel jobs cat post xxx arpa
ac ad ae af ag ai al am ao aq ar as at au aw ax az ba bb bd be bf bg bh bi bj bm bn bo br bs bt bw by bz
ca cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz de dj dk dm do dz ec ee eg er es et eu fi fj fk fm
fo fr ga gd ge gf gg gh gi gl gm gn gp gq gr gs gt gu gw gy hk hm hn hr ht hu id ie il im in io iq ir is it
je jm jo jp ke kg kh ki km kn kp kr kw ky kz la lb lc li lk lr ls lt lu lv ly ma mc md me mg mh mk ml mm mn
mo mp mq mr ms mt mu mv mw mx my mz na nc ne nf ng ni nl no np nr nu nz om pa pe pf pg ph pk pl pm pn pr ps
pt pw py qa re ro rs ru rw sa sb sc sd se sg sh si sk sl sm sn so sr ss st su sv sx sy sz tc td tf tg th tj
tk tl tm tn to tr tt tv tw tz ua ug uk us uy uz va vc ve vg vi vn vu wf ws ye yt za zm zw
academy agency app art bank bar best bet bio blog blue bot build business buzz cafe capital care careers
center chat city cloud club codes company computer consulting dating deals design dev digital direct
directory email energy engineering enterprises estate events exchange expert express family farm fashion
finance financial fit fitness fun fund gallery game games garden gmbh gold golf google group guru health
help holdings host house how inc institute insure international investments jetzt kim land legal life
link live llc lol love ltd market marketing media money movie network news ninja one online ooo page partners
photo photography photos pink plus press productions properties pub red rentals report rest review reviews
rocks run sale school science services shop show site social software solutions space store stream studio
style support systems team tech technology today tools top town toys trade training tv university uno vip
vision wang watch website wiki win work works world wtf xyz yahoo zone amazon apple microsoft aws azure
berlin london nyc paris tokyo swiss
`

// Second-level public suffixes under which a registrable name is required (user@co.uk is not an
// address; user@example.co.uk is).
const secondLevelList = `
co.uk ac.uk gov.uk org.uk ltd.uk plc.uk me.uk net.uk nhs.uk sch.uk
com.au net.au org.au edu.au gov.au asn.au id.au co.nz net.nz org.nz govt.nz ac.nz
co.jp ne.jp or.jp ac.jp go.jp co.kr or.kr ac.kr go.kr com.cn net.cn org.cn gov.cn edu.cn ac.cn
com.br net.br org.br gov.br edu.br com.mx org.mx gob.mx com.ar gob.ar co.in net.in org.in gov.in ac.in
co.za org.za gov.za ac.za com.sg edu.sg gov.sg com.hk org.hk edu.hk com.tw org.tw edu.tw com.tr gov.tr
edu.tr co.il org.il ac.il gov.il com.my co.id ac.id go.id co.th ac.th in.th com.ph com.vn com.pk com.ng
com.eg com.sa co.ke or.ke com.ua
`

var (
	tlds        = wordSet(tldList)
	secondLevel = wordSet(secondLevelList)
)

func wordSet(list string) map[string]struct{} {
	m := make(map[string]struct{})
	for _, w := range strings.Fields(list) {
		m[w] = struct{}{}
	}
	return m
}
