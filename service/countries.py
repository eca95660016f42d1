"""A customer's defaults from their country: message locale and time zone.

The order of precedence (docs/design.md, "Customers and identity"): the request's profile,
then the stored profile, then the country (this module), then the settings'
``default_locale`` / ``default_timezone``. A country is matched by its ISO 3166-1 alpha-2
code or by the English names transaction logs use (Online Retail II writes "United Kingdom",
"EIRE", "USA", "RSA"), case-insensitively. The locale is ``zh-CN`` where Chinese is the
language of the country and ``en`` for every other known country (the brand's templates
exist in those two); the time zone is the country's most populous one. An unknown or
missing country gives None, so the settings decide.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CountryDefaults", "country_defaults"]


@dataclass(frozen=True)
class CountryDefaults:
    """What a country implies when the profile does not say."""

    code: str  # ISO 3166-1 alpha-2
    locale: str
    timezone: str


_ZH = "zh-CN"
# code: (time zone, locale, other names)
_TABLE: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "GB": ("Europe/London", "en", ("United Kingdom", "UK", "Great Britain", "England")),
    "IE": ("Europe/Dublin", "en", ("Ireland", "EIRE")),
    "JE": ("Europe/Jersey", "en", ("Jersey", "Channel Islands")),
    "GG": ("Europe/Guernsey", "en", ("Guernsey",)),
    "DE": ("Europe/Berlin", "en", ("Germany",)),
    "FR": ("Europe/Paris", "en", ("France",)),
    "ES": ("Europe/Madrid", "en", ("Spain",)),
    "PT": ("Europe/Lisbon", "en", ("Portugal",)),
    "IT": ("Europe/Rome", "en", ("Italy",)),
    "NL": ("Europe/Amsterdam", "en", ("Netherlands", "The Netherlands")),
    "BE": ("Europe/Brussels", "en", ("Belgium",)),
    "CH": ("Europe/Zurich", "en", ("Switzerland",)),
    "AT": ("Europe/Vienna", "en", ("Austria",)),
    "SE": ("Europe/Stockholm", "en", ("Sweden",)),
    "NO": ("Europe/Oslo", "en", ("Norway",)),
    "DK": ("Europe/Copenhagen", "en", ("Denmark",)),
    "FI": ("Europe/Helsinki", "en", ("Finland",)),
    "IS": ("Atlantic/Reykjavik", "en", ("Iceland",)),
    "PL": ("Europe/Warsaw", "en", ("Poland",)),
    "CZ": ("Europe/Prague", "en", ("Czech Republic", "Czechia")),
    "LT": ("Europe/Vilnius", "en", ("Lithuania",)),
    "GR": ("Europe/Athens", "en", ("Greece",)),
    "CY": ("Asia/Nicosia", "en", ("Cyprus",)),
    "MT": ("Europe/Malta", "en", ("Malta",)),
    "US": ("America/New_York", "en", ("USA", "United States", "United States of America")),
    "CA": ("America/Toronto", "en", ("Canada",)),
    "BR": ("America/Sao_Paulo", "en", ("Brazil",)),
    "AU": ("Australia/Sydney", "en", ("Australia",)),
    "NZ": ("Pacific/Auckland", "en", ("New Zealand",)),
    "ZA": ("Africa/Johannesburg", "en", ("RSA", "South Africa")),
    "NG": ("Africa/Lagos", "en", ("Nigeria",)),
    "AE": ("Asia/Dubai", "en", ("United Arab Emirates", "UAE")),
    "SA": ("Asia/Riyadh", "en", ("Saudi Arabia",)),
    "BH": ("Asia/Bahrain", "en", ("Bahrain",)),
    "LB": ("Asia/Beirut", "en", ("Lebanon",)),
    "IL": ("Asia/Jerusalem", "en", ("Israel",)),
    "JP": ("Asia/Tokyo", "en", ("Japan",)),
    "KR": ("Asia/Seoul", "en", ("Korea", "South Korea")),
    "TH": ("Asia/Bangkok", "en", ("Thailand",)),
    "SG": ("Asia/Singapore", "en", ("Singapore",)),
    "CN": ("Asia/Shanghai", _ZH, ("China", "PRC", "Mainland China")),
    "HK": ("Asia/Hong_Kong", _ZH, ("Hong Kong",)),
    "MO": ("Asia/Macau", _ZH, ("Macau", "Macao")),
    "TW": ("Asia/Taipei", _ZH, ("Taiwan",)),
}
_BY_NAME: dict[str, CountryDefaults] = {}
for _code, (_zone, _locale, _names) in _TABLE.items():
    for _name in (_code, *_names):
        _BY_NAME[_name.casefold()] = CountryDefaults(_code, _locale, _zone)


def country_defaults(country: str | None) -> CountryDefaults | None:
    """The defaults of ``country`` (code or name, any case), None when unknown or missing."""
    if not country:
        return None
    return _BY_NAME.get(country.strip().casefold())
