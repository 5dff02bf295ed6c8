"""Name material for the seeded generator: international first and last names by locale.

Names are the point: certificates and emails must carry Łukasz Żółć, Дмитрий Иванов and
Ελένη Παπαδοπούλου intact. Each locale has a country, cities and a Moodle language.
"""

import unicodedata

# (language, country, cities, first names, last names)
LOCALES = [
    (
        "pl",
        "PL",
        ("Kraków", "Gdańsk", "Łódź"),
        ("Łukasz", "Zofia", "Katarzyna", "Paweł", "Małgorzata", "Jędrzej"),
        ("Żółć", "Wiśniewska", "Nowak", "Kowalczyk", "Wójcik", "Dąbrowski"),
    ),
    (
        "ru",
        "RU",
        ("Москва", "Казань", "Самара"),
        ("Дмитрий", "Анна", "Сергей", "Ольга", "Никита", "Татьяна"),
        ("Иванов", "Смирнова", "Кузнецов", "Попова", "Соколов", "Лебедева"),
    ),
    (
        "el",
        "GR",
        ("Αθήνα", "Θεσσαλονίκη", "Πάτρα"),
        ("Ελένη", "Γιώργος", "Μαρία", "Νίκος", "Κατερίνα", "Δημήτρης"),
        ("Παπαδοπούλου", "Παπαδόπουλος", "Οικονόμου", "Γεωργίου", "Νικολάου", "Αντωνίου"),
    ),
    (
        "en",
        "GB",
        ("Leeds", "York", "Bristol"),
        ("Alice", "Bob", "Emma", "Oliver", "Grace", "Harry"),
        ("Johnson", "Smith", "Taylor", "Walker", "Hughes", "Clarke"),
    ),
    (
        "en",
        "IE",
        ("Dublin", "Cork", "Galway"),
        ("Aoife", "Siobhán", "Seán", "Niamh", "Oisín", "Caoimhe"),
        ("O'Brien", "Murphy", "Ó Súilleabháin", "Walsh", "MacCarthy", "Ní Bhriain"),
    ),
    (
        "es",
        "ES",
        ("Sevilla", "Málaga", "A Coruña"),
        ("José", "María", "Lucía", "Álvaro", "Begoña", "Íñigo"),
        ("Núñez", "García", "Muñoz", "Peña", "Ibáñez", "Domínguez"),
    ),
    (
        "pt_br",
        "BR",
        ("São Paulo", "Belém", "Florianópolis"),
        ("João", "Inês", "Conceição", "Sebastião", "Luíza", "Thiago"),
        ("Gonçalves", "Araújo", "Conceição", "Magalhães", "Simões", "Brandão"),
    ),
    (
        "de",
        "DE",
        ("München", "Köln", "Düsseldorf"),
        ("Jürgen", "Zoë", "Björn", "Hanna", "Günther", "Lena"),
        ("Müller", "Größer", "Schäfer", "Brontë", "Weiß", "Köhler"),
    ),
    (
        "en",
        "DK",
        ("København", "Århus", "Odense"),
        ("Søren", "Åsa", "Mads", "Freja", "Jørgen", "Ida"),
        ("Kierkegård", "Ångström", "Jørgensen", "Nielsen", "Østergaard", "Bækgaard"),
    ),
    (
        "tr",
        "TR",
        ("İstanbul", "İzmir", "Eskişehir"),
        ("Mehmet", "Ayşe", "Çağla", "İbrahim", "Gülşen", "Oğuz"),
        ("Yılmaz", "Şahin", "Öztürk", "Çelik", "Doğan", "Kılıç"),
    ),
    (
        "fr",
        "FR",
        ("Besançon", "Nîmes", "Orléans"),
        ("Chloé", "François", "Hélène", "Amélie", "Jérôme", "Anaïs"),
        ("Dubois", "Lefèvre", "Bérubé", "Gauthier", "Mercier", "Fontaine"),
    ),
    (
        # No CJK locale: the embedded DejaVu fonts have no CJK glyphs, so a CJK name on a
        # certificate needs a CJK font added through templates.dir.
        "is",
        "IS",
        ("Reykjavík", "Akureyri", "Ísafjörður"),
        ("Ólafur", "Guðrún", "Þórður", "Sigríður", "Ágúst", "Bryndís"),
        ("Þórsson", "Jónsdóttir", "Guðmundsson", "Sigurðardóttir", "Ásgeirsson", "Björnsdóttir"),
    ),
    (
        "uk",
        "UA",
        ("Київ", "Львів", "Одеса"),
        ("Олександр", "Оксана", "Андрій", "Ірина", "Богдан", "Юлія"),
        ("Шевченко", "Коваленко", "Бондаренко", "Ткаченко", "Кравчук", "Мельник"),
    ),
    (
        "en",
        "EG",
        ("القاهرة", "الإسكندرية", "أسوان"),
        ("محمد", "فاطمة", "أحمد", "ليلى", "يوسف", "مريم"),
        ("العلي", "حسن", "الخطيب", "منصور", "سليمان", "عبد الله"),
    ),
    (
        "en",
        "VN",
        ("Hà Nội", "Đà Nẵng", "Huế"),
        ("Nguyễn", "Thảo", "Đức", "Phương", "Quỳnh", "Tuấn"),
        ("Trần", "Lê", "Phạm", "Hoàng", "Võ", "Đặng"),
    ),
]

# The first three learners, always: the names the contract says must survive.
FIRST_LEARNERS = [
    ("Łukasz", "Żółć", 0),
    ("Дмитрий", "Иванов", 1),
    ("Ελένη", "Παπαδοπούλου", 2),
]

COURSE_NAMES = [
    ("Workplace Safety Fundamentals", "WSF-101"),
    ("Data Protection Essentials", "GDPR-201"),
    ("Forklift Operation", "FORK-201"),
    ("First Aid at Work", "FAID-110"),
    ("Fire Safety Awareness", "FIRE-120"),
    ("Manual Handling", "MH-130"),
    ("Information Security Basics", "INFOSEC-140"),
    ("Customer Service Excellence", "CSE-150"),
    ("Leadership Foundations", "LEAD-300"),
    ("Anti-Bribery Compliance", "ABC-160"),
]

COMPANY_NAMES = [
    ("Northwind Logistics", "northwind", "NWL", "Leeds", "GB", "West Yorkshire"),
    ("Contoso Manufacturing", "contoso", "CTM", "Kraków", "PL", "Małopolska"),
    ("Fabrikam Health", "fabrikam", "FBH", "Lyon", "FR", "Auvergne-Rhône-Alpes"),
    ("Globex Retail", "globex", "GLX", "Sevilla", "ES", "Andalucía"),
    ("Initech Services", "initech", "INI", "Dublin", "IE", "Leinster"),
    ("Umbrella Energy", "umbrella", "UMB", "Köln", "DE", "Nordrhein-Westfalen"),
]
DEPARTMENT_NAMES = ["Warehouse", "Office", "Drivers", "Sales", "Maintenance"]

_FOLD = str.maketrans(
    {
        "ł": "l",
        "Ł": "L",
        "ø": "o",
        "Ø": "O",
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "đ": "d",
        "Đ": "D",
        "ı": "i",
        "œ": "oe",
    }
)


def ascii_slug(text: str) -> str:
    """Lower-case ASCII letters and digits of `text` ('' for non-Latin scripts)."""
    folded = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return "".join(c for c in folded.lower() if c.isascii() and c.isalnum())
