"""Word lists of fedcare's rule detector: common names, eponyms and capitalised words that are never names."""

from __future__ import annotations


def word_set(text: str, *, lower: bool = False) -> frozenset[str]:
    return frozenset(word.lower() if lower else word for word in text.split())


# ---------------------------------------------------------------------------------------------------------------
# Word lists. Names are US census-style common names; words that are also ordinary or medical words (Grace,
# Gene, Iris, Bell, Graves, Brown, ...) and place names (Virginia, Austin, Washington) are left out on purpose:
# a name list that matches "Graves disease" or "West Virginia" costs more precision than it buys recall.
# ---------------------------------------------------------------------------------------------------------------

FIRST_NAMES = word_set(
    """
    Aaron Abigail Adam Adrian Ahmed Aisha Alan Albert Alejandro Alex Alexander Alexis Alice Alicia Allison Alyssa
    Amanda Amy Ana Andrea Andrew Angela Anita Ann Anna Anne Annie Anthony Antonio Arthur Ashley Audrey Barbara
    Benjamin Betty Beverly Billy Bobby Bonnie Bradley Brandon Brenda Brian Brittany Bruce Bryan Caleb Camila
    Carl Carlos Carmen Carolyn Catherine Charles Chester Clarence
    Cheryl Chloe Christina Christine Christopher Cindy Claire Connie Craig
    Crystal Cynthia Daniel Danielle David Deborah Debra Denise Dennis Diana Diane Donald Donna Doris Dorothy Douglas
    Dylan Edward Eileen Elena Elijah Elizabeth Ella Ellen Emily Emma Eric Erica Erin Esther Ethan Eugene Evelyn
    Fatima Frances Francisco Fred Gabriel Gary George Gerald Gloria Gregory Hannah Harold Harry Heather Helen Henry
    Howard Irene Isaac Isabella Jacob Jacqueline James Jamie Jane Janet Janice Jason Javier Jean Jeffrey Jennifer
    Jeremy Jerry Jesse Jessica Jesus Joan Joanne John Jonathan Jorge Jose Joseph Joshua Joyce Juan Judith Judy
    Julia Julie Justin Karen Katherine Kathleen Kathryn Kayla Keith Kelly Kenneth Kevin Kimberly Kyle Larry Laura
    Lauren Lawrence Leah Linda Lisa Logan Lori Louis Lucas Luis Luke Lynn Manuel Margaret Maria Marie Marilyn
    Marcus Martha Mary Matthew Megan Melissa Michael Michelle Miguel Mohammed Muhammad Nancy Natalie Nathan Nicholas
    Nicole Noah Norma Olivia Omar Oscar Pamela Patricia Patrick Paul Paula Peggy Peter Philip Phyllis Priya Rachel
    Rajesh Ralph Randy Raymond Rebecca Ricardo Richard Rita Robert Roberto Roger Ronald Rosa Ruth Ryan Samantha
    Samuel Sandra Sara Sarah Scott Sean Sharon Shirley Sophia Stephanie Stephen Steven Susan Teresa Terry Theresa
    Thomas Timothy Tina Todd Tyler Valerie Vanessa Victor Vincent Walter Wanda Wayne William Willie Yolanda
    Zachary Zoe Mildred Gladys Edna Ethel Lillian Agnes Bernice Eleanor Marjorie Lucille Harriet Leonard Stanley
    Norman Floyd Lloyd Milton Irving Sidney Theodore Vernon Bernard Marvin Herman Jerome
    """
)

SURNAMES = word_set(
    """
    Adams Aguilar Alexander Ali Allen Alvarez Anderson Andrews Armstrong Bailey Baker Barnes Bennett Berry Boyd
    Bradley Brooks Bryant Burke Butler Campbell Carlson Carpenter Carroll Carter Castillo Castro Chavez Chen Clark
    Cohen Cole Coleman Collins Contreras Cooper Crawford Cruz Cunningham Daniels Davis Delgado Diaz Dixon Duncan
    Dunn Edwards Elliott Ellis Evans Ferguson Fernandez Fisher Flores Foster Freeman Friedman Garcia Gardner Garza
    Gibson Gomez Gonzales Gonzalez Gordon Graham Griffin Guerrero Gupta Gutierrez Guzman Hamilton Hansen
    Harper Harris Harrison Hart Hawkins Hayes Henderson Hernandez Herrera Hicks Hoffman Howard Hudson Hughes
    Jackson Jenkins Jimenez Johnson Johnston Jones Kaur Kelley Kelly Kennedy Khan Kim Kumar Larson Lawrence Lee
    Lewis Li Liu Lopez Lynch Marshall Martin Martinez Mason Matthews McCarthy McDonald Medina Mendez Mendoza Meyer
    Miller Mitchell Moore Morales Moreno Morgan Morris Munoz Murphy Murray Myers Nelson Nguyen Nichols Obrien
    O'Brien O'Connor Olson Ortiz Owens Palmer Parker Patel Patterson Payne Pena Perez Perkins Perry Peters Peterson
    Phillips Pierce Porter Powell Quinn Ramirez Ramos Reyes Reynolds Richards Richardson Riley Rivera Roberts
    Robertson Robinson Rodriguez Rogers Romero Ross Ruiz Russell Ryan Salazar Sanchez Sanders Santos Schmidt
    Schneider Scott Shah Shaw Silva Simmons Simpson Singh Snyder Soto Spencer Stephens Stevens Stewart Sullivan
    Taylor Thomas Thompson Torres Tran Tucker Vargas Vasquez Wagner Walker Wallace Wang Warren Watson Weaver Webb
    Wheeler Williams Willis Wilson Wong Wright Yang Zhang
    """
)

# Capitalised tokens that are eponyms or medical names; never a person in the rules that have no title cue.
EPONYMS = word_set(
    """
    Addison Alport Alzheimer Angelman Apgar Asperger Babinski Barre Barré Barrett Batten Behcet Behçet Bell Breslow
    Broca Brudzinski Brugada Burkitt Canavan Charcot Chiari Conn Creutzfeldt Crohn Cushing Danlos Doppler Down
    Dupuytren Duchenne Ehlers Eisenmenger Epley Ewing Fabry Fallot Fanconi Foley Gaucher Gehrig Glasgow Gleason
    Goodpasture Gram Graves Guillain Hashimoto Heimlich Henoch Hirschsprung Hodgkin Holter Homans Huntington Hurler
    Jakob Kaposi Kawasaki Kernig Klinefelter Korsakoff Krabbe Kussmaul Lewy Lou Lyme Mallory Marfan Meckel Meniere
    Ménière Nissen Niemann Noonan Osler Paget Pap Parkinson Peyronie Pompe Prader Prinzmetal Raynaud Rett Reye
    Romberg Roux Sachs Schonlein Schönlein Sjogren Sjögren Takayasu Takotsubo Tay Tourette Trendelenburg Turner
    Valsalva Wegener Wernicke Whipple Willi Wilms Wolff Zenker Zollinger
    """,
    lower=True,
)

# A run of capitalised words followed by one of these (after an optional possessive and one more word) is an
# eponym ("Hodgkin lymphoma", "Lou Gehrig's disease", "Marcus Gunn jaw-winking syndrome"), not a person.
EPONYM_HEADS = sorted(
    word_set(
        "disease diseases syndrome syndromes palsy lymphoma sarcoma tumor tumour carcinoma leukemia sign signs test "
        "tests maneuver manoeuvre reflex phenomenon score scale criteria classification fracture catheter tube ulcer "
        "esophagus cyst neuroma disorder dystrophy ataxia chorea cell cells body bodies node nodes nodule pupil stain "
        "smear monitor position procedure operation surgery repair technique method index law rule effect triad "
        "angina virus bacillus contracture deformity aneurysm anomaly sequence equation formula block incision line "
        "lines point ring membrane canal duct gland glands pouch hernia valve loop spot spots thyroiditis "
        "encephalopathy dementia neuralgia neuropathy arthritis anemia anaemia ratio curve diverticulum protocol "
        "variant grade grading staging splint fixation granuloma esotropia keratitis tremor type types malformation "
        "malformations tendon tendons"
    )
)

# Capitalised words that end or reject a name: function words, dialogue fillers, note headings, departments,
# places and other words that follow a first name or a cue word without being a name.
STOP_WORDS = word_set(
    """
    a about above after again against all also although always am an and another any are around as at away back
    be because been before being below best between both but by can cannot could did do does doing done down during
    each either else enough even ever every for from further get gets getting give given go goes going good got
    great had has have having he hello her here hers herself hi him himself his how however i if in into is it its
    itself just last let like made make many may maybe me might more most much must my myself neither never new
    next no nor not now of off oh ok okay old on once one only or other others our out over own per please quite
    rather really right said same say says see seen she should since so some still such sure than thank thanks
    that the their them themselves then there therefore these they this those though through thus to today
    tomorrow too toward towards um uh under until up upon us very via was we well were what when where whether which
    while who whom whose why will with within without would yes yeah yesterday yet you your yours alright hey
    patient patients pt name names age sex male female man woman boy girl baby infant child children
    history hx assessment plan impression diagnosis diagnoses medications medication meds allergies allergy exam
    examination physical review systems chief complaint present illness past medical surgical family social
    vitals vital signs labs lab laboratory results result imaging procedure procedures findings note notes progress
    discharge discharged admission admitted summary instructions follow followup date time dob mrn account address
    phone fax email insurance policy member provider attending resident nurse doctor physician surgeon clinic
    clinics hospital hospitals center centers centre department dept unit ward room floor service services emergency
    urgent care intensive primary general internal cardiology oncology neurology radiology pathology pediatrics
    psychiatry surgery orthopedics dermatology endocrinology gastroenterology nephrology pulmonology rheumatology
    urology obstetrics gynecology hematology infectious disease diseases syndrome disorder cancer heart lung kidney
    liver brain blood health healthcare medicine medicare medicaid institute institutes national american
    association society foundation university college school library research program programs administration
    agency office board council committee group network alliance coalition control prevention information
    education resources resource support trial trials study studies clinical genetic genetics rare type stage grade
    class level normal abnormal positive negative left right bilateral acute chronic severe mild moderate stable
    unstable other none never always morning evening night week weeks month months year years
    monday tuesday wednesday thursday friday saturday sunday january february march april june july august
    september october november december jan feb mar apr jun jul aug sep sept oct nov dec
    street st avenue ave road rd drive dr lane ln boulevard blvd court ct place pl way suite apt apartment building
    bldg practitioner assistant north south east west miss mister mr mrs ms mx prof madam unfortunately
    fortunately additionally furthermore otherwise currently recently previously overall finally initially
    subsequently apparently basically actually honestly usually probably approximately almost nope yep pretty
    kinda sorry everything nothing something anything two three four five six seven eight nine ten eleven twelve
    twenty thirty forty fifty sixty seventy eighty ninety hundred first second third
    central mount saint lake river park hill valley county city state town village united states america english
    spanish german danish arab
    caucasian african hispanic latino latina asian black white native jewish european indian chinese
    japanese korean mexican christian catholic muslim protestant data query alabama alaska arizona arkansas
    california colorado connecticut delaware florida hawaii idaho illinois indiana iowa kansas kentucky louisiana
    maine maryland massachusetts michigan minnesota mississippi missouri montana nebraska nevada ohio oklahoma
    oregon pennsylvania tennessee texas utah vermont wisconsin wyoming
    continue continued start started stop stopped return returned take taking taken call called check recheck
    monitor refer referred consult consulted schedule scheduled signed dictated electronically reviewed discussed
    denies denied reports reported presents presented noted states stated complains complained agrees agreed
    tolerated underwent arrived seen visit visits per regarding re cc attn subject dear sincerely regards
    mg mcg ml tablet tablets capsule capsules dose doses daily twice bid tid qid prn po iv im sc subcutaneous oral
    tylenol advil motrin aspirin lipitor eliquis lasix coumadin warfarin insulin metformin synthroid zoloft
    prozac xanax ativan norco percocet vicodin plavix crestor zocor nexium prilosec protonix
    """
)

# Words that start a place name ("New York", "Fort Worth"), kept when a city is trimmed of ordinary words.
CITY_PREFIXES = word_set(
    "new north south east west saint st san santa los las el fort lake mount port palm",
    lower=True,
)

# Surname particles ("van der Berg", "de la Cruz").
PARTICLES = word_set("van von de del della der den di da du la le dos das bin ibn al el")

# Countries, continents and regions: not Safe Harbor identifiers (nor are US states, in rules._STATE_NAMES), so a
# named-entity recognizer's "places" among them stay in the text.
COUNTRIES = word_set(
    """
    afghanistan africa albania algeria america americas argentina asia australia austria bangladesh belgium
    brazil britain bulgaria canada caribbean chile china colombia croatia cuba czechia denmark egypt england
    ethiopia europe finland france germany ghana greece haiti hungary iceland india indonesia iran iraq ireland
    israel italy jamaica japan jordan kenya korea lebanon libya malaysia mexico morocco nepal netherlands nigeria
    norway pakistan peru philippines poland portugal romania russia scotland senegal serbia singapore somalia spain
    sudan sweden switzerland syria taiwan tanzania thailand turkey uganda ukraine vietnam wales yemen zimbabwe
    uk usa us u.s. u.s.a. uae eu europe scandinavia
    bolivia ecuador paraguay uruguay venezuela guatemala honduras nicaragua panama belize angola botswana cameroon
    congo zambia malawi mozambique namibia rwanda liberia mali niger chad tunisia kazakhstan uzbekistan mongolia
    cambodia laos myanmar burma fiji samoa estonia latvia lithuania slovakia slovenia belarus moldova armenia
    azerbaijan cyprus malta luxembourg kuwait qatar oman bahrain bhutan maldives greenland
    oceania antarctica arctic mediterranean polynesia micronesia melanesia balkans pacific atlantic
    northern southern eastern western northeast northwest southeast southwest midwest
    """,
    lower=True,
)
COUNTRY_PHRASES = frozenset(
    {
        "united states",
        "united kingdom",
        "united states of america",
        "the united states",
        "the us",
        "the uk",
        "south africa",
        "new zealand",
        "saudi arabia",
        "sri lanka",
        "north america",
        "south america",
        "latin america",
        "middle east",
        "the netherlands",
        "hong kong",
        "great britain",
        "northern ireland",
        "south korea",
        "north korea",
        "east africa",
        "west africa",
        "sub-saharan africa",
        "southeast asia",
        "south asia",
        "east asia",
        "costa rica",
        "el salvador",
        "puerto rico",
        "dominican republic",
        "sierra leone",
        "ivory coast",
        "papua new guinea",
        "pacific islands",
        "central america",
        "central asia",
        "north africa",
        "southern africa",
    }
)
