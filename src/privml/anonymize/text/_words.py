"""Closed word lists the PERSON/LOCATION rules lean on (all lower case).

``COMMON`` is everyday English vocabulary (the thousand commonest words, plus the words that
double as given names, surnames or towns: "may", "will", "young", "reading", "nice"...). A
gazetteer hit on one of them is only evidence when context supports it.
"""

from __future__ import annotations

__all__ = [
    "COMMON",
    "GEO_HEADS",
    "GEO_TAILS",
    "MONTHS",
    "NOT_NAMES",
    "ORG_TAILS",
    "PLACE_ALIASES",
    "PLACE_SUFFIXES",
    "STREET_ENDINGS",
    "STREET_HEADS",
    "STREET_SUFFIXES",
    "SURNAME_ENDINGS",
    "TITLES",
]

_COMMON_TEXT = """
a ability able about above accept according account across act action activity actually add
address administration admit adult affect african after again against age agency agent ago
agree agreement ahead air all allow almost alone along already also although always amber
american among amount an analysis and angel animal another answer any anyone anything appear
apple apply approach april arabic archer area argue arm around arrive art article artist as
ash asian ask assume at attack attention attorney audience august author authority autumn
available avenue avoid away baby back bad bag baker ball bank banks bar base basil bass bath
bay be beat beautiful because become bed before begin behavior behind believe bell benefit
berry best better between beyond big bill billion birch bird bishop bit black bliss blood blue
board body book born both bow box boy brandy break bridge bridges bright bring british brook
brooks brother buck buddy budget build building business but buy by call camera campaign can
canadian candidate candy capital car card care career carry carter case cash catch catholic
cause cell center central century certain certainly chair challenge chance change character
charge charity chase check cherry child chinese chip choice choose christ christian church
citizen city civil claim class clay clear clearly cliff close coach cold collection college
color commerce commercial common community company compare computer concern condition
conference congress consider constance consumer contain continue control cook cooper cost
could country couple course court cover create crime cross crystal cultural culture cup
current customer cut daisy dale dark data daughter dawn day deacon deal dean dear debate
decade december decide decision deep defense degree democrat democratic describe design
despite destiny detail determine develop development diamond difference different difficult
dinner direction director discover discuss discussion do doctor dog door down dr draw dream
drew drive drop drug duke during dusty dutch each eagle earl early east eastern easy eat
economic economy edge education effect effort eight either election elm else email employee
end energy english enjoy enough enter enterprise entire environment environmental especially
establish european even evening event ever every everybody everyone everything evidence
exactly example executive exist expect experience expert explain eye face fact factor faith
fall falls family far fast father fear february federal feel feeling few field fields fight
figure fill film final finally financial find fine finish fire firm first fish fisher five
floor fly focus follow food foot for force foreign forest forget form former fortune forward
four fox free freeman french friday friend from front frost full fund future game gap garden
gardner gas gay gene general generation german get ginger girl give glass glen go goal god
gold golden good government grace great greek green ground group grove groves grow growth
guess gun guy hair half hall hand happen happy hard hardy harmony have hazel he head health
hear heart heath heather heavy held hello help hem her here herself hey hi high hills him
himself hindi his history hit hold holly home honey honor hope hospital hot hotel hour house
how however huge human hundred hunter husband i idea identify if image imagine impact
important improve in include including increase indeed independence indian indicate individual
industry information inside instead institution interest interesting international internet
interview into investment involve iris iron issue it italian item its itself ivy jade january
japanese jesus jewish job join joy judge july june just justice keep key kid kind king kitchen
know knowledge korean lady lake lakes lamb land lane language large last late later latin
laugh laurel law lawyer lay lead leader learn least leave left leg less let letter level
liberty life light like likely lily line list listen little live local long look lord lose
loss lot love low lucky machine madam magazine main maintain major majority make man manage
management manager many march marina mark market marriage marsh mason material matter may
maybe me meadow meadows mean measure media medical meet meeting melody member memory mention
mercy merry message method mexican middle might military miller million mind minute miss
mission misty mobile model modern moment monday money month moon moor more morning moss most
mother mouth move movement movie mr mrs ms much music muslim must my myself name nation
national natural nature near nearly necessary need network never new news newspaper next nice
night nine no noble none nor normal north northern not note nothing notice november now number
oak occur october of off offer office officer official often oil ok okay old olive on once one
only onto open operation opportunity option or orange order organization other others our out
outside over own owner page painting paper paradise parent parker part participant particular
particularly partner party pass past pat patience pattern pay peace pearl pen penny people
pepper per perform performance perhaps person personal phone physical pick picture piece pike
pine place plan plant play player please plum pm point police policy political politics poor
pope popular population porter portuguese position positive possible post power practice
precious prepare present president pressure pretty prevent price prince princess probably
process produce product production prof professional professor program project property
protect prove provide prudence public pull purpose push put quality queen question quickly
quite race radio rain raise range rate rather ray reach read reading ready real reality
realize really reason receive recent recently recognize record red reduce reed reflect regal
region relate relationship religious remain remember report represent republican require
research resource respond response responsibility rest result return reveal rich right rise
risk river road robin rock role room rose royal ruby rule run russian rusty safe sage said
same sandy saturday save sawyer say scene school science scientist score sea season seat
second section security see seek seem sell send senior sense september series serious serve
service set seven several shake share sharp she short should shoulder show side sign
significant silver similar simple simply since sing single sir sister sit site situation six
size skill skin sky small smile snow so social society soldier some somebody someone something
sometimes son song soon sort sound source south southern space spanish speak special specific
speech spend split sport spring staff stage stand standard star start state statement station
stay steel step sterling stern still stock stone stop store storm stormy story strange
strategy street strong structure student study stuff style subject success successful such
suddenly sue suffer suggest summer sun sunday sunny support sure surface surprise system table
take talk tanner task tax teach teacher team technology television tell temple ten tend term
test than thank thanks that the their them themselves then theory there these they thing think
third this those though thought thousand threat three through throughout throw thursday thus
time to today together tomorrow tonight too top total tough toward town trade traditional
training travel treat treatment tree trial trinity trip trouble true truth try tuesday turn
turner tv two type under understand union unit unity until up upon us use usually value van
various verity very view violet visit voice vote wade wait walk walker wall want war watch
water way we wear weaver web wednesday week weight well west western what whatever when where
whether which while white who whole whom whose why wide wife will willow win wind window windy
winter wish with within without wolf woman wonder woods word work worker world worry would
wright write writer wrong yard yeah year yes yesterday yet you young your yourself"""
COMMON: frozenset[str] = frozenset(_COMMON_TEXT.split())

# Capitalised words that are never a name or a place on their own: months, weekdays,
# languages and nationalities, pronouns and other sentence openers.
_NOT_NAMES_TEXT = """
january february march april may june july august september october november december
jan feb mar apr jun jul aug sep sept oct nov dec
monday tuesday wednesday thursday friday saturday sunday mon tue wed thu fri sat sun
english french german spanish italian chinese japanese russian arabic portuguese dutch korean
hindi latin greek european african asian british canadian mexican indian christian muslim
jewish catholic american americans europeans swiss polish swedish danish norwegian finnish
irish scottish welsh australian brazilian turkish iranian israeli egyptian
the a an this that these those it he she we they i you me my our your his her their its
in on at of for with and but or if when while after before then there here what who whom
where why how yes no not please thanks thank hello hi hey dear ok okay also just so
today tomorrow yesterday tonight god lord jesus christ internet web email phone
mr mrs ms miss mx dr prof sir madam ma'am
contact patient employee customer client applicant user tenant student candidate author owner
holder member guest driver passenger attn cc hi hello hey thanks regards sincerely cheers
ship deliver subject re fwd fw from to call email phone tel mobile fax
"""
NOT_NAMES: frozenset[str] = frozenset(_NOT_NAMES_TEXT.split())

# Honorifics: the capitalised words after one are a person's name.
_TITLES_TEXT = """
mr mrs ms miss mx dr prof professor sir dame lady lord rev reverend fr capt captain col
colonel lt lieutenant sgt sergeant officer detective det judge justice senator sen rep
representative gov governor president mayor coach uncle aunt auntie nurse agent inspector
chief pastor rabbi imam father sister brother madam mme mlle herr frau chancellor minister
premier king queen prince princess pope archbishop cardinal ambassador commissioner sheriff
provost secretary
"""
TITLES: frozenset[str] = frozenset(_TITLES_TEXT.split())

# A capitalised run ending in one of these names an organisation, not a person.
_ORG_TAILS_TEXT = """
inc ltd llc llp plc corp corporation co company bank university college school academy
hospital clinic institute foundation group association club party ministry department
council committee agency church museum airlines airways technologies technology systems
labs laboratories press times news journal studios records motors partners holdings
services solutions international industries society union library hotel restaurant cafe
bar team fc gmbh ag sa bv
"""
ORG_TAILS: frozenset[str] = frozenset(_ORG_TAILS_TEXT.split())

# A capitalised run that starts (heads) or ends (tails) with one of these is a place.
_GEO_HEADS_TEXT = """
lake mount mt port fort san santa los las sankt lago monte cape isle north south east west
new upper lower greater horní dolní nové nový nová staré starý stará velké velký malé malý
nowy nowa stary stara bad
"""
GEO_HEADS: frozenset[str] = frozenset(_GEO_HEADS_TEXT.split())
_GEO_TAILS_TEXT = """
city town county island islands valley beach heights springs falls bay harbor harbour river
mountains hills peninsula province district village borough parish coast shire tower
bridge castle palace cathedral square airport station stadium centre center
"""
GEO_TAILS: frozenset[str] = frozenset(_GEO_TAILS_TEXT.split())

# Endings typical of town names, used as weak evidence for an unknown capitalised word.
PLACE_SUFFIXES: tuple[str, ...] = (
    "ville", "burg", "burgh", "borough", "bury", "chester", "caster", "cester", "ford",
    "field", "shire", "stadt", "heim", "hausen", "dorf", "grad", "abad", "pur", "polis",
    "mouth", "wick", "minster", "stan", "sk", "ow", "ice", "side", "haven", "furt", "stad",
)

# Endings typical of European surnames (Polish, Czech, Scandinavian, Spanish, Romanian,
# Italian, Croatian, Turkish, Finnish, Slavic), used as evidence that a run of unknown
# capitalised words is a person's name.
SURNAME_ENDINGS: tuple[str, ...] = (
    "ski", "ska", "cki", "cka", "dzki", "wicz", "czyk", "ová", "ský", "ská", "čka", "sen",
    "son", "sson", "ez", "az", "escu", "eanu", "ić", "vić", "oğlu", "ini", "elli", "etti",
    "otti", "ucci", "uzzi", "nen", "inen", "enko", "chuk", "ovich", "ova", "eva", "ov", "ev",
    "yan", "ides", "opoulos", "akis", "mann",
)

# Country and region names people write that GeoNames spells otherwise.
PLACE_ALIASES: tuple[str, ...] = (
    "USA", "U.S.A.", "U.S.", "UK", "U.K.", "America", "Britain", "Great Britain", "England",
    "Scotland", "Wales", "Northern Ireland", "Holland", "Europe", "Asia", "Africa",
    "North America", "South America", "Latin America", "Middle East", "Czech Republic",
    "Ivory Coast", "Burma", "Korea", "Congo", "Antarctica", "Oceania", "Scandinavia",
    "Siberia", "Bavaria", "Catalonia", "Tuscany", "Provence", "Normandy", "Brittany",
    "Silicon Valley", "Long Island", "Manhattan", "Brooklyn", "Queens", "The Bronx",
    # official and older forms of country names (ISO 3166, UN)
    "Russian Federation", "Syrian Arab Republic", "Libyan Arab Jamahiriya", "Kyrgyz Republic",
    "Slovak Republic", "Republic of Korea", "Korea, Republic of", "Viet Nam", "Holy See",
    "Brunei Darussalam", "Cabo Verde", "Czechia", "Eswatini", "Swaziland", "Macedonia",
    "North Macedonia", "Tanzania", "United Republic of Tanzania", "Palestine",
    "Palestinian Territory", "Vatican City", "Timor-Leste", "East Timor", "Côte d'Ivoire",
    "Cote d'Ivoire", "Democratic Republic of the Congo", "Republic of the Congo",
    "Lao People's Democratic Republic", "Iran, Islamic Republic of", "Micronesia",
    "Federated States of Micronesia", "Moldova", "Republic of Moldova", "Bolivia",
    "Venezuela", "Taiwan", "Hong Kong", "Macau", "Macao", "Kosovo", "Greenland",
    "Faroe Islands", "Svalbard", "Jan Mayen", "Reunion", "Réunion", "Curacao", "Curaçao",
    "Saint Barthelemy", "Saint Martin", "Sint Maarten", "Falkland Islands", "The Gambia",
    "The Netherlands", "The Bahamas", "The Philippines", "United States of America",
    "Great Britain", "Virgin Islands", "British Virgin Islands", "US Virgin Islands",
)

# Street suffixes: the USPS Publication 28 list (words and common abbreviations) and the
# British ones it lacks.
_STREET_SUFFIXES_TEXT = """
Alley Aly Annex Arcade Avenue Ave Av Bayou Beach Bend Bluff Bluffs Bottom Boulevard Blvd
Branch Bridge Brook Brooks Burg Burgs Bypass Camp Canyon Cape Causeway Center Centre Circle
Cir Cliff Cliffs Close Club Common Commons Corner Corners Course Court Ct Courts Cove Coves
Creek Crescent Cres Crest Crossing Crossroad Curve Dale Dam Divide Drive Dr Drives Estate
Estates Expressway Expy Extension Ext Falls Ferry Field Fields Flat Flats Ford Fords Forest
Forge Forges Fork Forks Fort Freeway Fwy Garden Gardens Gateway Glen Glens Green Greens
Grove Groves Harbor Harbors Haven Heights Hts Highway Hwy Hill Hills Hollow Inlet Island
Islands Isle Junction Junctions Key Keys Knoll Knolls Lake Lakes Land Landing Lane Ln Light
Lights Loaf Lock Locks Lodge Loop Mall Manor Manors Meadow Meadows Mews Mill Mills Mission
Motorway Mount Mountain Mountains Neck Orchard Oval Overpass Park Parks Parkway Pkwy Pass
Passage Path Pike Pine Pines Place Pl Plain Plains Plaza Point Points Port Ports Prairie
Radial Ramp Ranch Rapid Rapids Rest Ridge Ridges River Road Rd Roads Route Row Rue Run
Shoal Shoals Shore Shores Skyway Spring Springs Spur Spurs Square Sq Squares Station
Stravenue Stream Street St Streets Summit Terrace Ter Throughway Trace Track Trafficway
Trail Trl Trailer Tunnel Turnpike Underpass Union Unions Valley Valleys Via Viaduct View
Views Village Villages Ville Vista Walk Walks Wall Way Ways Well Wells Wharf Wynd Gate
Extensions Crossings Cswy Crk Trce Vw Vly
"""
STREET_SUFFIXES: tuple[str, ...] = tuple(_STREET_SUFFIXES_TEXT.split())

# Endings of Germanic and Nordic street names written as one word, before the number:
# "Hartmannstraße 8", "Norastraat 39", "Catosingel 110".
STREET_ENDINGS: tuple[str, ...] = (
    "straße", "strasse", "str.", "gasse", "weg", "allee", "platz", "damm", "ufer",
    "steig", "chaussee", "straat", "laan", "gracht", "singel", "plein", "dijk", "kade",
    "markt", "vej", "gade", "gatan", "vägen", "veien", "gata", "katu", "polku", "dreef",
    "baan", "steeg", "pad", "hof", "kuja", "tie", "väylä", "gränd", "stig", "backe", "torg",
    "plads", "bulevardi", "ická", "ská", "cká",
)

# Words that open a street name in Romance, Slavic and Indonesian addresses, where the
# number comes after the name: "Via Roma 12", "ul. Długa 5", "Jl. Waringin No. 798".
STREET_HEADS: tuple[str, ...] = (
    "Rue", "Avenue", "Av.", "Avda.", "Avenida", "Boulevard", "Bd", "Chemin", "Impasse",
    "Quai", "Allée", "Calle", "Carrer", "Camino", "Paseo", "Plaza", "Ronda", "Via", "Viale",
    "Piazza", "Piazzale", "Corso", "Vicolo", "Largo", "Rua", "Travessa", "Praça", "Alameda",
    "Estrada", "Rodovia", "Parque", "ul.", "ulica", "al.", "aleja", "plac", "os.",
    "Jl.", "Jalan", "Gang", "Gg.", "Aleea", "Strada", "Str.", "Soseaua", "Șoseaua",
    "Bulevardul", "Calea", "Splaiul", "Pasadizo", "Pasaje", "Callejón", "Travesía", "Glorieta",
    "Cuesta", "Rambla", "Urbanización", "Vía", "Avinguda", "Rruga", "Ulitsa",
)

# Month names and abbreviations -> month number.
MONTHS: dict[str, int] = {
    "jan": 1, "january": 1, "feb": 2, "february": 2, "mar": 3, "march": 3, "apr": 4,
    "april": 4, "may": 5, "jun": 6, "june": 6, "jul": 7, "july": 7, "aug": 8, "august": 8,
    "sep": 9, "sept": 9, "september": 9, "oct": 10, "october": 10, "nov": 11,
    "november": 11, "dec": 12, "december": 12,
}
